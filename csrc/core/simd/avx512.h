// AVX-512 (F/BW/DQ/VL): 16 fp32 lanes in a zmm register, tails through k-masks. Include only from
// translation units compiled with the avx512 or avx512_simde flags (see mbk_isa_sources).
//
// The avx512_simde ISA compiles the same kernel sources a second time (<op>_avx512_simde.cc) with
// baseline x86-64 flags and MBK_AVX512_SIMDE, the intrinsics coming from SIMDe's AVX-512
// emulation, so the AVX-512 kernels run in the tests on CPUs without AVX-512. Both builds link
// into one library: every kernel TU names its namespace MBK_AVX512_NS (avx512 or avx512_simde), so
// the two builds' kernels, and the templates instantiated over their VecF32, are different
// symbols; MBK_AVX512_NAME is the same name as a string (kernel names).
#pragma once

#if defined(MBK_AVX512_SIMDE)
#if defined(__AVX512F__)
// SIMDe would use the native instructions: the build would not run on CPUs without AVX-512.
#error "MBK_AVX512_SIMDE must be compiled with baseline x86-64 flags, not the avx512 ones"
#endif
#ifndef SIMDE_ENABLE_NATIVE_ALIASES
#define SIMDE_ENABLE_NATIVE_ALIASES
#endif
#include <simde/x86/avx512.h>
#define MBK_AVX512_NS avx512_simde
#define MBK_AVX512_NAME "avx512_simde"
#else
#include <immintrin.h>
#define MBK_AVX512_NS avx512
#define MBK_AVX512_NAME "avx512"
#endif

#include <cstdint>

namespace mbk::simd::MBK_AVX512_NS {

// SIMDe 0.7 has native aliases for the intrinsics and vector types but not for the mask type or
// _MM_FROUND_NO_EXC: both builds spell them through these.
#if defined(MBK_AVX512_SIMDE)
using Mask16 = simde__mmask16;
constexpr int kRoundNearest = SIMDE_MM_FROUND_TO_NEAREST_INT | SIMDE_MM_FROUND_NO_EXC;
#else
using Mask16 = __mmask16;
constexpr int kRoundNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
#endif

#if defined(MBK_AVX512_SIMDE)
// SIMDe 0.7.4 (Debian 12) lacks five of the intrinsics the kernels use; these give the same results
// as the instructions, and a SIMDe that has its own (its native aliases are macros) is used as is.
// Lane loops through memory: speed does not matter here, only that the kernel code runs.
#ifndef _mm512_maskz_loadu_ps
// Only the masked lanes are read, like the instruction (no access past the end of a row).
inline __m512 _mm512_maskz_loadu_ps(Mask16 k, const void* p) {
  const float* src = static_cast<const float*>(p);
  float lanes[16];
  for (int l = 0; l < 16; ++l) lanes[l] = (k >> l) & 1 ? src[l] : 0.0f;
  return _mm512_loadu_ps(lanes);
}
#endif
#ifndef _mm512_mask_storeu_ps
inline void _mm512_mask_storeu_ps(void* p, Mask16 k, __m512 v) {
  float* dst = static_cast<float*>(p);
  float lanes[16];
  _mm512_storeu_ps(lanes, v);
  for (int l = 0; l < 16; ++l)
    if ((k >> l) & 1) dst[l] = lanes[l];
}
#endif
#ifndef _mm512_cvtps_epi32
// cvtss2si converts like vcvtps2dq: rounding by MXCSR (nearest-even by default).
inline __m512i _mm512_cvtps_epi32(__m512 v) {
  float lanes[16];
  int32_t out[16];
  _mm512_storeu_ps(lanes, v);
  for (int l = 0; l < 16; ++l) out[l] = _mm_cvtss_si32(_mm_set_ss(lanes[l]));
  return _mm512_loadu_si512(out);
}
#endif
#ifndef _mm512_cvtepi32_ps
// Lane by lane, rounding like vcvtdq2ps (MXCSR: nearest-even by default).
inline __m512 _mm512_cvtepi32_ps(__m512i v) {
  int32_t lanes[16];
  float out[16];
  _mm512_storeu_si512(lanes, v);
  for (int l = 0; l < 16; ++l) out[l] = static_cast<float>(lanes[l]);
  return _mm512_loadu_ps(out);
}
#endif
// SIMDe 0.7.4's native alias of _mm512_madd_epi16 takes the masked form's 4 arguments (a typo):
// the 2-argument intrinsic under its SIMDe name.
#undef _mm512_madd_epi16
#define _mm512_madd_epi16(a, b) simde_mm512_madd_epi16(a, b)
#ifndef _mm512_reduce_add_ps
// The same tree as GCC's _mm512_reduce_add_ps (halves added, 16 -> 8 -> 4 -> 2 -> 1), so the sum
// rounds as in the native build.
inline float _mm512_reduce_add_ps(__m512 v) {
  float t[16];
  _mm512_storeu_ps(t, v);
  for (int w = 8; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) t[l] = t[l] + t[l + w];
  return t[0];
}
#endif
#endif  // MBK_AVX512_SIMDE

// 32-bit lane products mod 2^32 (vpmulld). SIMDe 0.7.4 multiplies the lanes as int32_t, a signed
// overflow (undefined; UBSan stops the sanitizer build on dropout's hash), so the emulated build
// multiplies them as uint32_t, which wraps by definition.
inline __m512i mullo_epi32(__m512i a, __m512i b) {
#if defined(MBK_AVX512_SIMDE)
  uint32_t x[16], y[16];
  _mm512_storeu_si512(x, a);
  _mm512_storeu_si512(y, b);
  for (int l = 0; l < 16; ++l) x[l] *= y[l];
  return _mm512_loadu_si512(x);
#else
  return _mm512_mullo_epi32(a, b);
#endif
}

struct VecF32 {
  using value_type = float;
  using reg = __m512;
  static constexpr int W = 16;

  static reg zero() { return _mm512_setzero_ps(); }
  static reg set1(float v) { return _mm512_set1_ps(v); }
  static reg load(const float* p) { return _mm512_load_ps(p); }
  static reg loadu(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, reg v) { _mm512_store_ps(p, v); }
  static void storeu(float* p, reg v) { _mm512_storeu_ps(p, v); }
  // n in [0, W): masked lanes are neither read (no fault past the end) nor written.
  static Mask16 tail_mask(int n) { return static_cast<Mask16>((1u << n) - 1u); }
  static reg load_partial(const float* p, int n) { return _mm512_maskz_loadu_ps(tail_mask(n), p); }
  static void store_partial(float* p, reg v, int n) { _mm512_mask_storeu_ps(p, tail_mask(n), v); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  static reg round(reg x) { return _mm512_roundscale_ps(x, kRoundNearest); }
  // 2^n for integral n in [-126, 127]: n + 127 in the exponent field.
  static reg pow2(reg n) {
    const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
  }
#if defined(MBK_AVX512_SIMDE)
  // Without FMA in the baseline flags, SIMDe's _mm512_fmadd_ps rounds a * b before adding c; the
  // instruction rounds once. fmaf lane by lane rounds like the instruction, so the emulated kernels
  // compute what they compute on AVX-512 hardware.
  static reg fmadd(reg a, reg b, reg c) {
    float x[16], y[16], z[16];
    _mm512_storeu_ps(x, a);
    _mm512_storeu_ps(y, b);
    _mm512_storeu_ps(z, c);
    for (int l = 0; l < 16; ++l) z[l] = __builtin_fmaf(x[l], y[l], z[l]);
    return _mm512_loadu_ps(z);
  }
#else
  static reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
#endif
  // Dropout (dropout.h) on W elements: lane i is element base + offsets[i] (uint32, wrapping);
  // scale where lowbias32(idx ^ key) >= threshold, else 0.
  static reg dropout_multiplier(uint32_t base, const int32_t* offsets, uint32_t key,
                                uint32_t threshold, float scale) {
    __m512i x = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(base)),
                                 _mm512_loadu_si512(offsets));
    x = _mm512_xor_si512(x, _mm512_set1_epi32(static_cast<int32_t>(key)));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = mullo_epi32(x, _mm512_set1_epi32(0x7FEB352D));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
    x = mullo_epi32(x, _mm512_set1_epi32(static_cast<int32_t>(0x846CA68Bu)));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    const Mask16 keep =
        _mm512_cmpge_epu32_mask(x, _mm512_set1_epi32(static_cast<int32_t>(threshold)));
    return _mm512_maskz_mov_ps(keep, _mm512_set1_ps(scale));
  }
  static float reduce_add(reg v) { return _mm512_reduce_add_ps(v); }
};

}  // namespace mbk::simd::MBK_AVX512_NS
