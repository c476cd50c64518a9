// NoNorm fp32 kernels for avx512 (simd::avx512::VecF32, 16 lanes), compiled with the avx512 flags
// (mbk_isa_sources). Forward tile: 1 row x 64 columns (4 zmm of x, w, b, y); backward tile: 32 rows
// x 64 columns with w and the gw/gb accumulators in 12 zmm registers; tails through k-masks.
// The loops themselves are in nonorm_impl.h. Built twice, the second time as avx512_simde: see
// MBK_AVX512_NS in simd/avx512.h.
#include "ops/nonorm_impl.h"
#include "simd/avx512.h"

namespace mbk::ops::MBK_AVX512_NS {

void nonorm_forward_f32(const NoNormFwdArgs<float>& a) {
  detail::nonorm_forward<simd::MBK_AVX512_NS::VecF32>(a);
}
void nonorm_backward_f32(const NoNormBwdArgs<float>& a) {
  detail::nonorm_backward<simd::MBK_AVX512_NS::VecF32>(a);
}

}  // namespace mbk::ops::MBK_AVX512_NS
