// NoNorm fp32 kernels for avx2 (simd::avx2::VecF32, 8 lanes), compiled with the avx2 flags
// (mbk_isa_sources). Forward tile: 1 row x 32 columns (4 ymm of x, w, b, y); backward tile: 32 rows
// x 32 columns with w and the gw/gb accumulators in 12 ymm registers.
// The loops themselves are in nonorm_impl.h.
#include "ops/nonorm_impl.h"
#include "simd/avx2.h"

namespace mbk::ops::avx2 {

void nonorm_forward_f32(const NoNormFwdArgs<float>& a) {
  detail::nonorm_forward<simd::avx2::VecF32>(a);
}
void nonorm_backward_f32(const NoNormBwdArgs<float>& a) {
  detail::nonorm_backward<simd::avx2::VecF32>(a);
}

}  // namespace mbk::ops::avx2
