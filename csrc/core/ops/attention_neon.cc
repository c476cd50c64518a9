// Attention fp32 kernels for neon (4 lanes): tiles of 6 query rows x 16 keys (QKᵀ) or 6 rows x 16
// head columns (PV), 24 of the 32 q registers as accumulators, vfmaq_f32 (fmla). On x86 the same
// intrinsics compile through SIMDe. Compiled with the neon flags (mbk_isa_sources); the loops are
// in attention_impl.h.
#include "simd/neon.h"

#include "ops/attention_impl.h"

namespace mbk::ops::neon {

using V = simd::neon::VecF32;

namespace {

void forward(const AttentionArgs& a, const AttentionTasks& tasks, int64_t t0, int64_t t1,
             const AttentionLayout& L, float* ws) {
  attention_tasks<V, 6, 4>(a, tasks, t0, t1, L, ws);
}

void backward(const AttentionArgs& a, const AttentionGradArgs& g, int64_t t0, int64_t t1,
              const AttentionBackwardLayout& L, float* ws) {
  attention_backward_tasks<V, 6, 4>(a, g, t0, t1, L, ws);
}

}  // namespace

const AttentionKernels attention_f32 = {&forward, &backward, &dropout_rows_impl<V>};

}  // namespace mbk::ops::neon
