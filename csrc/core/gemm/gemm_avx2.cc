// f32_gemm_6x16__avx2: AVX2 + FMA, a 6 x 16 tile of C in 12 ymm accumulators; per k 2 panel
// loads, 6 broadcasts of A and 12 FMAs (15 of the 16 ymm registers live in the loop).
// Compiled with the avx2 flags (mbk_isa_sources); the templates are in gemm_impl.h.
#include <immintrin.h>

#include "simd/avx2.h"

namespace mbk::gemm::avx2 {
namespace {
struct V : simd::avx2::VecF32 {
  static reg min(reg a, reg b) { return _mm256_min_ps(a, b); }
  static reg div(reg a, reg b) { return _mm256_div_ps(a, b); }
  static reg where_positive(reg u, reg x) {
    return _mm256_and_ps(_mm256_cmp_ps(u, _mm256_setzero_ps(), _CMP_GT_OQ), x);
  }
};
}  // namespace
}  // namespace mbk::gemm::avx2

#include "gemm/epilogue_backward_impl.h"

namespace mbk::gemm::avx2 {

const IsaGemm& f32_gemm() {
  static const IsaGemm kernels{{6, 16, "f32_gemm_6x16__avx2"}, &run_rows<V, 6, 2>,
                               &layernorm_rows<V>, &layernorm_backward_rows<V>,
                               &activation_backward_rows<V>};
  return kernels;
}

}  // namespace mbk::gemm::avx2
