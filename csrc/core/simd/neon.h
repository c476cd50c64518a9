// NEON (AArch64 Advanced SIMD): 4 fp32 lanes in a q register. On x86 the same intrinsics compile
// through SIMDe (SIMDE_ENABLE_NATIVE_ALIASES), so the NEON kernels are tested on the build host.
// NEON has no masked load/store: tails go through a small stack buffer.
#pragma once

#if defined(__aarch64__)
#include <arm_neon.h>
#else
#ifndef SIMDE_ENABLE_NATIVE_ALIASES
#define SIMDE_ENABLE_NATIVE_ALIASES
#endif
#include <simde/arm/neon.h>
#endif

#include <cstdint>

namespace mbk::simd::neon {

struct VecF32 {
  using value_type = float;
  using reg = float32x4_t;
  static constexpr int W = 4;

  static reg zero() { return vdupq_n_f32(0.0f); }
  static reg set1(float v) { return vdupq_n_f32(v); }
  static reg load(const float* p) { return vld1q_f32(p); }
  static reg loadu(const float* p) { return vld1q_f32(p); }
  static void store(float* p, reg v) { vst1q_f32(p, v); }
  static void storeu(float* p, reg v) { vst1q_f32(p, v); }
  // n in [0, W): lanes at and beyond n read as 0 and are not written.
  static reg load_partial(const float* p, int n) {
    float buf[W] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int i = 0; i < n; ++i) buf[i] = p[i];
    return vld1q_f32(buf);
  }
  static void store_partial(float* p, reg v, int n) {
    float buf[W];
    vst1q_f32(buf, v);
    for (int i = 0; i < n; ++i) p[i] = buf[i];
  }
  static reg add(reg a, reg b) { return vaddq_f32(a, b); }
  static reg mul(reg a, reg b) { return vmulq_f32(a, b); }
  static reg max(reg a, reg b) { return vmaxq_f32(a, b); }
  static reg round(reg x) { return vrndnq_f32(x); }
  // 2^n for integral n in [-126, 127]: n + 127 in the exponent field.
  static reg pow2(reg n) {
    return vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23));
  }
  // vfmaq_f32(c, a, b) = c + a * b, fused (fmla).
  static reg fmadd(reg a, reg b, reg c) { return vfmaq_f32(c, a, b); }
  static float reduce_add(reg v) { return vaddvq_f32(v); }
  // uint32 lane products modulo 2³². AArch64: one mul. SIMDe's portable vmulq_u32 multiplies as
  // signed int (overflow is undefined behaviour, which UBSan reports), so through SIMDe the low
  // halves of widening products are taken instead.
  static uint32x4_t mul_u32(uint32x4_t a, uint32x4_t b) {
#if defined(__aarch64__)
    return vmulq_u32(a, b);
#else
    return vcombine_u32(vmovn_u64(vmull_u32(vget_low_u32(a), vget_low_u32(b))),
                        vmovn_u64(vmull_u32(vget_high_u32(a), vget_high_u32(b))));
#endif
  }
  // Dropout (dropout.h) on W elements: lane i is element base + offsets[i] (uint32, wrapping);
  // scale where lowbias32(idx ^ key) >= threshold, else 0.
  static reg dropout_multiplier(uint32_t base, const int32_t* offsets, uint32_t key,
                                uint32_t threshold, float scale) {
    uint32x4_t x = vaddq_u32(vdupq_n_u32(base), vreinterpretq_u32_s32(vld1q_s32(offsets)));
    x = veorq_u32(x, vdupq_n_u32(key));
    x = veorq_u32(x, vshrq_n_u32(x, 16));
    x = mul_u32(x, vdupq_n_u32(0x7FEB352Du));
    x = veorq_u32(x, vshrq_n_u32(x, 15));
    x = mul_u32(x, vdupq_n_u32(0x846CA68Bu));
    x = veorq_u32(x, vshrq_n_u32(x, 16));
    const uint32x4_t keep = vcgeq_u32(x, vdupq_n_u32(threshold));
    return vreinterpretq_f32_u32(vandq_u32(keep, vreinterpretq_u32_f32(vdupq_n_f32(scale))));
  }
};

}  // namespace mbk::simd::neon
