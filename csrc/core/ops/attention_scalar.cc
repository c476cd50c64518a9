// Attention fp32 kernels in plain C++ (width-1 "vectors"): tiles of 4 query rows x 4 keys or head
// columns in 16 scalar accumulators; the portable baseline. The loops are in attention_impl.h.
#include <cstdint>

#include "simd/scalar.h"

namespace mbk::ops::scalar {
namespace {
struct V : simd::scalar::VecF32 {
  static reg round(reg x) { return __builtin_nearbyintf(x); }
  // 2^n for integral n in [-126, 127]: n + 127 in the exponent field.
  static reg pow2(reg n) {
    const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
    float out;
    __builtin_memcpy(&out, &bits, sizeof out);
    return out;
  }
};
}  // namespace
}  // namespace mbk::ops::scalar

#include "ops/attention_impl.h"

namespace mbk::ops::scalar {

void attention_f32(const AttentionArgs& a, const AttentionTasks& tasks, int64_t t0, int64_t t1,
                   const AttentionLayout& L, float* ws) {
  attention_tasks<V, 4, 4>(a, tasks, t0, t1, L, ws);
}

}  // namespace mbk::ops::scalar
