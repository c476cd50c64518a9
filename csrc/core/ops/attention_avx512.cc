// Attention fp32 kernels for avx512 (16 lanes): tiles of 6 query rows x 32 keys (QKᵀ) or 6 rows
// x 32 head columns (PV: one tile covers MobileBERT's head size), 12 zmm accumulators. Compiled
// with the avx512 flags (mbk_isa_sources); the loops are in attention_impl.h. Built twice, the
// second time as avx512_simde: see MBK_AVX512_NS in simd/avx512.h.
// GCC 12 warns inside avx512fintrin.h (GCC PR 105593, fixed in GCC 13); see gemm_avx512.cc.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include "simd/avx512.h"

#include "ops/attention_impl.h"

namespace mbk::ops::MBK_AVX512_NS {

using V = simd::MBK_AVX512_NS::VecF32;

namespace {

void forward(const AttentionArgs& a, const AttentionTasks& tasks, int64_t t0, int64_t t1,
             const AttentionLayout& L, float* ws) {
  attention_tasks<V, 6, 2>(a, tasks, t0, t1, L, ws);
}

void backward(const AttentionArgs& a, const AttentionGradArgs& g, int64_t t0, int64_t t1,
              const AttentionBackwardLayout& L, float* ws) {
  attention_backward_tasks<V, 6, 2>(a, g, t0, t1, L, ws);
}

}  // namespace

const AttentionKernels attention_f32 = {&forward, &backward, &dropout_rows_impl<V>};

}  // namespace mbk::ops::MBK_AVX512_NS
