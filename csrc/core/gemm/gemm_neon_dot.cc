// q8_gemm_6x16__neondot: the int8 GEMM on NEON's dot-product extension (FEAT_DotProd, ARMv8.2+,
// optional before ARMv8.4): vdotq_s32 (sdot) sums 4 int8 products into each int32 lane exactly,
// 16 products per instruction where plain NEON's kernel (gemm_neon.cc) takes 4 (smull, smull2,
// addp, sadalp). Same tile and packing as that kernel (gemm_neon.h); chosen at run time where the
// CPU has the extension (cpu.h int8_dot_supported).
//
// A file of its own because it needs the extension's flags (mbk_isa_sources, neon_dot):
// -march=armv8.2-a+dotprod natively (every CPU with the dot product is ARMv8.2 or later). It keeps
// to gemm_impl.h's rules (internal linkage, no std:: calls); the inline functions it shares with
// the baseline TUs are simd/neon.h's fp32 ones, where ARMv8.2 adds nothing the compiler would use.
// On x86 it compiles through SIMDe like gemm_neon.cc.
#include "gemm/gemm_neon.h"

namespace mbk::gemm::neon {
namespace {
struct Q : Q8Operands {
  static acc dot(acc c, wreg a, wreg w) { return vdotq_s32(c, a, w); }
};
}  // namespace
}  // namespace mbk::gemm::neon

#include "gemm/int8_impl.h"

namespace mbk::gemm::neon {

const Int8Gemm& q8_gemm_dot() {
  static const Int8Gemm kernel = int8_gemm<V, Q, kInt8MR, kInt8NV>("q8_gemm_6x16__neondot");
  return kernel;
}

}  // namespace mbk::gemm::neon
