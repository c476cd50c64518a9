// q8_gemm_6x16__neon: the int8 GEMM on plain NEON, for the AArch64 CPUs without the dot product
// (ARMv8.0/8.1: Cortex-A53, A72), which run q8_gemm_6x16__neondot (gemm_neon_dot.cc) otherwise.
// The tile is in gemm_neon.h. On x86 the intrinsics compile through SIMDe, so the kernel is tested
// here. Compiled with the neon flags (mbk_isa_sources); the templates are in int8_impl.h.
#include "gemm/gemm_neon.h"

namespace mbk::gemm::neon {
namespace {
// vmull_s8 / vmull_high_s8 (smull, smull2): the 16 products as int16 (|p| <= 127^2), columns 0-1
// in lo, 2-3 in hi, each column's 4 in 4 adjacent lanes; vpaddq_s16 (addp) adds adjacent lanes,
// lo's then hi's, so lanes 2l, 2l + 1 hold column l's two pair sums (<= 2 * 127^2 < 2^15);
// vpadalq_s16 (sadalp) adds each such pair into int32 lane l. 4 instructions per 16 products
// where sdot takes 1.
struct Q : Q8Operands {
  static acc dot(acc c, wreg a, wreg w) {
    const int16x8_t lo = vmull_s8(vget_low_s8(a), vget_low_s8(w));
    const int16x8_t hi = vmull_high_s8(a, w);
    return vpadalq_s16(c, vpaddq_s16(lo, hi));
  }
};
}  // namespace
}  // namespace mbk::gemm::neon

#include "gemm/int8_impl.h"

namespace mbk::gemm::neon {

const Int8Gemm& q8_gemm() {
  static const Int8Gemm kernel = int8_gemm<V, Q, kInt8MR, kInt8NV>("q8_gemm_6x16__neon");
  return kernel;
}

}  // namespace mbk::gemm::neon
