// Attention fp32 kernels for avx2 (8 lanes): tiles of 6 query rows x 16 keys (QKᵀ) or 6 rows x 16
// head columns (PV), 12 ymm accumulators. Compiled with the avx2 flags (mbk_isa_sources); the
// loops are in attention_impl.h.
#include <immintrin.h>

#include "simd/avx2.h"

#include "ops/attention_impl.h"

namespace mbk::ops::avx2 {

using V = simd::avx2::VecF32;

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

}  // namespace mbk::ops::avx2
