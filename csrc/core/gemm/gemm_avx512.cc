// f32_gemm_6x64__avx512: AVX-512F, a 6 x 64 tile of C in 24 zmm accumulators; per k 4 panel
// loads, 6 broadcasts of A and 24 FMAs (29 of the 32 zmm registers live in the loop). 6 x 64 beat
// 8 x 32 and 14 x 32 on MobileBERT's shapes (docs/design.md "MobileBERT facts", measured).
// Compiled with the avx512 flags (mbk_isa_sources); the templates are in gemm_impl.h. Built twice,
// the second time as avx512_simde (f32_gemm_6x64__avx512_simde): see MBK_AVX512_NS in simd/avx512.h.
// GCC 12 warns inside avx512fintrin.h (_mm512_undefined_ps's self-initialization, GCC PR 105593,
// fixed in GCC 13) wherever max/min/reduce_add are inlined.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include "simd/avx512.h"

namespace mbk::gemm::MBK_AVX512_NS {
namespace {
struct V : simd::MBK_AVX512_NS::VecF32 {
  static reg min(reg a, reg b) { return _mm512_min_ps(a, b); }
  static reg div(reg a, reg b) { return _mm512_div_ps(a, b); }
  static reg where_positive(reg u, reg x) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(u, _mm512_setzero_ps(), _CMP_GT_OQ), x);
  }
};
}  // namespace
}  // namespace mbk::gemm::MBK_AVX512_NS

#include "gemm/epilogue_backward_impl.h"

namespace mbk::gemm::MBK_AVX512_NS {

const IsaGemm& f32_gemm() {
  static const IsaGemm kernels{{6, 64, "f32_gemm_6x64__" MBK_AVX512_NAME}, &run_rows<V, 6, 4>,
                               &layernorm_rows<V>, &layernorm_backward_rows<V>,
                               &activation_backward_rows<V>};
  return kernels;
}

}  // namespace mbk::gemm::MBK_AVX512_NS
