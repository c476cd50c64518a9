// What the NEON GEMM translation units share: gemm_neon.cc (fp32), gemm_neon_int8.cc (int8 on
// plain NEON) and gemm_neon_dot.cc (int8 on the dot-product extension, compiled with it).
// Everything is in the anonymous namespace, each TU its own copy (gemm_impl.h).
#pragma once

#include <cstdint>

#include "simd/neon.h"

namespace mbk::gemm::neon {
namespace {

struct V : simd::neon::VecF32 {
  static reg min(reg a, reg b) { return vminq_f32(a, b); }
#if defined(__aarch64__)
  static reg div(reg a, reg b) { return vdivq_f32(a, b); }
#else
  // SIMDe 0.7 has no vdivq_f32 (A64 only): a reciprocal estimate and two Newton steps (AArch32's
  // way; ~1 ulp on erf's well-scaled denominator).
  static reg div(reg a, reg b) {
    reg r = vrecpeq_f32(b);
    r = vmulq_f32(r, vrecpsq_f32(b, r));
    r = vmulq_f32(r, vrecpsq_f32(b, r));
    return vmulq_f32(a, r);
  }
#endif
  static reg where_positive(reg u, reg x) {
    return vreinterpretq_f32_u32(vandq_u32(vcgtq_f32(u, vdupq_n_f32(0.0f)), vreinterpretq_u32_f32(x)));
  }
};

// The int8 operands of int8_impl.h's Q but the dot product, which the two int8 kernels supply:
// G = 4 int8 per int32 lane, 4 columns (16 bytes) per q register, A signed (offset 0).
struct Q8Operands {
  using elem = int8_t;
  static constexpr int G = 4;
  static constexpr int W = 4;
  static constexpr int offset = 0;
  using wreg = int8x16_t;
  using acc = int32x4_t;
  static acc init(const int32_t* p) { return vld1q_s32(p); }
  static wreg load(const int8_t* p) { return vld1q_s8(p); }
  static wreg broadcast(const int8_t* p) {
    int32_t v;
    __builtin_memcpy(&v, p, sizeof v);
    return vreinterpretq_s8_s32(vdupq_n_s32(v));
  }
  static float32x4_t to_float(acc c) { return vcvtq_f32_s32(c); }
  static wreg operand(acc c) { return vreinterpretq_s8_s32(c); }
  static void keep(acc&) {}
  static void store(int8_t* p, float32x4_t y) {
    // vrndnq_f32 rounds half to even; the values are integral in [-127, 127] after it, so the
    // conversion and the narrowing are exact.
    const int16x4_t h = vmovn_s32(vcvtq_s32_f32(vrndnq_f32(y)));
    const int32_t v = vget_lane_s32(vreinterpret_s32_s8(vmovn_s16(vcombine_s16(h, h))), 0);
    __builtin_memcpy(p, &v, sizeof v);
  }
};

// The tile of both int8 kernels: 6 x 16, 24 q accumulators and 4 panel registers, the rest of the
// 32 for the 6 rows' broadcasts and plain NEON's product temporaries: 8 x 16 would need 32
// accumulators. One NR for both keeps the packing the same whichever the CPU takes. Both files are
// compiled without GCC's pre-register-allocation scheduler (CMakeLists.txt): it hoists every
// broadcast and product of a group above the dots and spills accumulators (2 of the 24 with sdot,
// up to 8 with smull; objdump), even at 4 x 16 for plain NEON.
constexpr int kInt8MR = 6, kInt8NV = 4;

}  // namespace
}  // namespace mbk::gemm::neon
