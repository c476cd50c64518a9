// NoNorm fp32 kernels for avx512 (simd::avx512::VecF32, 16 lanes), compiled with the avx512 flags
// (mbk_isa_sources). Forward tile: 1 row x 64 columns (4 zmm of x, w, b, y); backward tile: 32 rows
// x 64 columns with w and the gw/gb accumulators in 12 zmm registers; tails through k-masks.
// The loops themselves are in nonorm_impl.h.
#include "ops/nonorm_impl.h"
#include "simd/avx512.h"

namespace mbk::ops::avx512 {

void nonorm_forward_f32(const NoNormFwdArgs<float>& a) {
  detail::nonorm_forward<simd::avx512::VecF32>(a);
}
void nonorm_backward_f32(const NoNormBwdArgs<float>& a) {
  detail::nonorm_backward<simd::avx512::VecF32>(a);
}

}  // namespace mbk::ops::avx512
