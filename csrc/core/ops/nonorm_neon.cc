// NoNorm fp32 kernels for neon (simd::neon::VecF32, 4 lanes), compiled with the neon flags
// (mbk_isa_sources). Forward tile: 1 row x 16 columns (4 q registers of x, w, b, y); backward tile:
// 32 rows x 16 columns with w and the gw/gb accumulators in 12 q registers. On x86 this TU compiles
// through SIMDe (baseline SSE2 code, so it runs on any x86-64).
// The loops themselves are in nonorm_impl.h.
#include "ops/nonorm_impl.h"
#include "simd/neon.h"

namespace mbk::ops::neon {

void nonorm_forward_f32(const NoNormFwdArgs<float>& a) {
  detail::nonorm_forward<simd::neon::VecF32>(a);
}
void nonorm_backward_f32(const NoNormBwdArgs<float>& a) {
  detail::nonorm_backward<simd::neon::VecF32>(a);
}

}  // namespace mbk::ops::neon
