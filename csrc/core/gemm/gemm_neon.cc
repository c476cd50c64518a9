// f32_gemm_6x8__neon: AArch64 NEON, a 6 x 8 tile of C in 12 q accumulators; per k 2 panel loads,
// 6 broadcasts of A (ld1r) and 12 vfmaq_f32 (fmla). On x86 the same intrinsics compile through
// SIMDe, so the kernel is tested here; its speed only means something on ARM. Compiled with the
// neon flags (mbk_isa_sources); the templates are in gemm_impl.h.
#include "simd/neon.h"

namespace mbk::gemm::neon {
namespace {
struct V : simd::neon::VecF32 {
  static reg min(reg a, reg b) { return vminq_f32(a, b); }
#if defined(__aarch64__)
  static reg div(reg a, reg b) { return vdivq_f32(a, b); }
#else
  // SIMDe 0.7 has no vdivq_f32 (A64 only): a reciprocal estimate and two Newton steps (AArch32's
  // way; ~1 ulp on erf's well-scaled denominator).
  static reg div(reg a, reg b) {
    reg r = vrecpeq_f32(b);
    r = vmulq_f32(r, vrecpsq_f32(b, r));
    r = vmulq_f32(r, vrecpsq_f32(b, r));
    return vmulq_f32(a, r);
  }
#endif
  static reg where_positive(reg u, reg x) {
    return vreinterpretq_f32_u32(vandq_u32(vcgtq_f32(u, vdupq_n_f32(0.0f)), vreinterpretq_u32_f32(x)));
  }
};
}  // namespace
}  // namespace mbk::gemm::neon

#include "gemm/epilogue_backward_impl.h"

namespace mbk::gemm::neon {

const IsaGemm& f32_gemm() {
  static const IsaGemm kernels{{6, 8, "f32_gemm_6x8__neon"}, &run_rows<V, 6, 2>,
                               &layernorm_rows<V>, &layernorm_backward_rows<V>,
                               &activation_backward_rows<V>};
  return kernels;
}

}  // namespace mbk::gemm::neon
