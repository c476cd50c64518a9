// f32_gemm_6x8__neon: AArch64 NEON, a 6 x 8 tile of C in 12 q accumulators; per k 2 panel loads,
// 6 broadcasts of A (ld1r) and 12 vfmaq_f32 (fmla). The int8 kernels are in gemm_neon_int8.cc and
// gemm_neon_dot.cc. On x86 the same intrinsics compile through SIMDe, so the kernel is tested here;
// its speed only means something on ARM. Compiled with the neon flags (mbk_isa_sources); the
// templates are in gemm_impl.h.
#include "gemm/gemm_neon.h"

#include "gemm/epilogue_backward_impl.h"

namespace mbk::gemm::neon {

const IsaGemm& f32_gemm() {
  static const IsaGemm kernels{{6, 8, "f32_gemm_6x8__neon"}, &run_rows<V, 6, 2>,
                               &layernorm_rows<V>, &layernorm_backward_rows<V>,
                               &activation_backward_rows<V>, q8_gemm(), q8_gemm_dot()};
  return kernels;
}

}  // namespace mbk::gemm::neon
