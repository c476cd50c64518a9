// Attention fp32 kernels in plain C++ (width-1 "vectors"): tiles of 4 query rows x 4 keys or head
// columns in 16 scalar accumulators; the portable baseline. The loops are in attention_impl.h.
#include <cstdint>

#include "simd/scalar.h"

#include "ops/attention_impl.h"

namespace mbk::ops::scalar {

using V = simd::scalar::VecF32;

namespace {

void forward(const AttentionArgs& a, const AttentionTasks& tasks, int64_t t0, int64_t t1,
             const AttentionLayout& L, float* ws) {
  attention_tasks<V, 4, 4>(a, tasks, t0, t1, L, ws);
}

void backward(const AttentionArgs& a, const AttentionGradArgs& g, int64_t t0, int64_t t1,
              const AttentionBackwardLayout& L, float* ws) {
  attention_backward_tasks<V, 4, 4>(a, g, t0, t1, L, ws);
}

}  // namespace

const AttentionKernels attention_f32 = {&forward, &backward, &dropout_rows_impl<V>};

}  // namespace mbk::ops::scalar
