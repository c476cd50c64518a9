// Attention fp32 kernels for avx2 (8 lanes): tiles of 6 query rows x 16 keys (QKᵀ) or 6 rows x 16
// head columns (PV), 12 ymm accumulators. Compiled with the avx2 flags (mbk_isa_sources); the
// loops are in attention_impl.h.
#include <immintrin.h>

#include "simd/avx2.h"

namespace mbk::ops::avx2 {
namespace {
struct V : simd::avx2::VecF32 {
  static reg round(reg x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // 2^n for integral n in [-126, 127]: n + 127 in the exponent field.
  static reg pow2(reg n) {
    const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
  }
};
}  // namespace
}  // namespace mbk::ops::avx2

#include "ops/attention_impl.h"

namespace mbk::ops::avx2 {

void attention_f32(const AttentionArgs& a, const AttentionTasks& tasks, int64_t t0, int64_t t1,
                   const AttentionLayout& L, float* ws) {
  attention_tasks<V, 6, 2>(a, tasks, t0, t1, L, ws);
}

}  // namespace mbk::ops::avx2
