// AVX-512 (F/BW/DQ/VL): 16 fp32 lanes in a zmm register, tails through k-masks. Include only from
// translation units compiled with the avx512 flags (see mbk_isa_sources).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace mbk::simd::avx512 {

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
  static __mmask16 tail_mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static reg load_partial(const float* p, int n) { return _mm512_maskz_loadu_ps(tail_mask(n), p); }
  static void store_partial(float* p, reg v, int n) { _mm512_mask_storeu_ps(p, tail_mask(n), v); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  static reg round(reg x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // 2^n for integral n in [-126, 127]: n + 127 in the exponent field.
  static reg pow2(reg n) {
    const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
  }
  static reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  // Dropout (dropout.h) on W elements: lane i is element base + offsets[i] (uint32, wrapping);
  // scale where lowbias32(idx ^ key) >= threshold, else 0.
  static reg dropout_multiplier(uint32_t base, const int32_t* offsets, uint32_t key,
                                uint32_t threshold, float scale) {
    __m512i x = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(base)),
                                 _mm512_loadu_si512(offsets));
    x = _mm512_xor_si512(x, _mm512_set1_epi32(static_cast<int32_t>(key)));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7FEB352D));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(static_cast<int32_t>(0x846CA68Bu)));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    const __mmask16 keep =
        _mm512_cmpge_epu32_mask(x, _mm512_set1_epi32(static_cast<int32_t>(threshold)));
    return _mm512_maskz_mov_ps(keep, _mm512_set1_ps(scale));
  }
  static float reduce_add(reg v) { return _mm512_reduce_add_ps(v); }
};

}  // namespace mbk::simd::avx512
