// Attention fp32 kernels for avx512 (16 lanes): tiles of 6 query rows x 32 keys (QKᵀ) or 6 rows
// x 32 head columns (PV: one tile covers MobileBERT's head size), 12 zmm accumulators. Compiled
// with the avx512 flags (mbk_isa_sources); the loops are in attention_impl.h.
// GCC 12 warns inside avx512fintrin.h (GCC PR 105593, fixed in GCC 13); see gemm_avx512.cc.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <immintrin.h>

#include "simd/avx512.h"

namespace mbk::ops::avx512 {
namespace {
struct V : simd::avx512::VecF32 {
  static reg round(reg x) {
    return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  // 2^n for integral n in [-126, 127]: n + 127 in the exponent field.
  static reg pow2(reg n) {
    const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
  }
};
}  // namespace
}  // namespace mbk::ops::avx512

#include "ops/attention_impl.h"

namespace mbk::ops::avx512 {

void attention_f32(const AttentionArgs& a, const AttentionTasks& tasks, int64_t t0, int64_t t1,
                   const AttentionLayout& L, float* ws) {
  attention_tasks<V, 6, 2>(a, tasks, t0, t1, L, ws);
}

}  // namespace mbk::ops::avx512
