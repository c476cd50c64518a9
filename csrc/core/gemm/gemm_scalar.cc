// f32_gemm_4x4__scalar: portable C++, a 4 x 4 tile of C in 16 scalar accumulators; the baseline
// every build has. q8_gemm_4x4__scalar: the int8 GEMM the same way, int32 accumulators.
// Compiled with the host's baseline flags; the templates are in gemm_impl.h and int8_impl.h.
#include "simd/scalar.h"

namespace mbk::gemm::scalar {
namespace {
struct V : simd::scalar::VecF32 {
  static reg min(reg a, reg b) { return a < b ? a : b; }
  static reg div(reg a, reg b) { return a / b; }
  static reg where_positive(reg u, reg x) { return u > 0.0f ? x : 0.0f; }
};

struct Q {
  using elem = int8_t;
  static constexpr int G = 4;
  struct wreg {
    int8_t b[4];
  };
  using acc = int32_t;
  static constexpr int W = 1;
  static constexpr int offset = 0;
  static acc init(const int32_t* p) { return *p; }
  static wreg load(const int8_t* p) { return {{p[0], p[1], p[2], p[3]}}; }
  static wreg broadcast(const int8_t* p) { return load(p); }
  static acc dot(acc c, wreg a, wreg w) {
    return c + a.b[0] * w.b[0] + a.b[1] * w.b[1] + a.b[2] * w.b[2] + a.b[3] * w.b[3];
  }
  static float to_float(acc c) { return static_cast<float>(c); }
  static wreg operand(acc c) {
    wreg b;
    __builtin_memcpy(b.b, &c, sizeof c);
    return b;
  }
  static void keep(acc&) {}
  static void store(int8_t* p, float y) { *p = static_cast<int8_t>(__builtin_nearbyintf(y)); }
};
}  // namespace
}  // namespace mbk::gemm::scalar

#include "gemm/epilogue_backward_impl.h"
#include "gemm/int8_impl.h"

namespace mbk::gemm::scalar {

const IsaGemm& f32_gemm() {
  static const IsaGemm kernels{{4, 4, "f32_gemm_4x4__scalar"}, &run_rows<V, 4, 4>,
                               &layernorm_rows<V>, &layernorm_backward_rows<V>,
                               &activation_backward_rows<V>,
                               int8_gemm<V, Q, 4, 4>("q8_gemm_4x4__scalar")};
  return kernels;
}

}  // namespace mbk::gemm::scalar
