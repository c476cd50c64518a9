// NoNorm kernels in plain C++ (width-1 "vectors"): the portable fp32 path and the fp64 path that
// every ISA uses (gradcheck runs on it). Compiled with no extra ISA flags. Forward tile: 1 row x
// 4 columns; backward tile: 32 rows x 4 columns with w and the gw/gb sums in registers.
// The loops themselves are in nonorm_impl.h.
#include "ops/nonorm_impl.h"
#include "simd/scalar.h"

namespace mbk::ops::scalar {

void nonorm_forward_f32(const NoNormFwdArgs<float>& a) {
  detail::nonorm_forward<simd::scalar::VecF32>(a);
}
void nonorm_backward_f32(const NoNormBwdArgs<float>& a) {
  detail::nonorm_backward<simd::scalar::VecF32>(a);
}
void nonorm_forward_f64(const NoNormFwdArgs<double>& a) {
  detail::nonorm_forward<simd::scalar::VecF64>(a);
}
void nonorm_backward_f64(const NoNormBwdArgs<double>& a) {
  detail::nonorm_backward<simd::scalar::VecF64>(a);
}

}  // namespace mbk::ops::scalar
