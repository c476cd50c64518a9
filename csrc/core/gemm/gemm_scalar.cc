// f32_gemm_4x4__scalar: portable C++, a 4 x 4 tile of C in 16 scalar accumulators; the baseline
// every build has. Compiled with the host's baseline flags; the templates are in gemm_impl.h.
#include "simd/scalar.h"

namespace mbk::gemm::scalar {
namespace {
struct V : simd::scalar::VecF32 {
  static reg min(reg a, reg b) { return a < b ? a : b; }
  static reg div(reg a, reg b) { return a / b; }
  static reg where_positive(reg u, reg x) { return u > 0.0f ? x : 0.0f; }
};
}  // namespace
}  // namespace mbk::gemm::scalar

#include "gemm/epilogue_backward_impl.h"

namespace mbk::gemm::scalar {

const IsaGemm& f32_gemm() {
  static const IsaGemm kernels{{4, 4, "f32_gemm_4x4__scalar"}, &run_rows<V, 4, 4>,
                               &layernorm_rows<V>, &layernorm_backward_rows<V>,
                               &activation_backward_rows<V>};
  return kernels;
}

}  // namespace mbk::gemm::scalar
