// AVX2 + FMA: 8 fp32 lanes in a ymm register. Include only from translation units compiled with
// the avx2 flags (-mavx2 -mfma -mf16c, see mbk_isa_sources).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace mbk::simd::avx2 {

struct VecF32 {
  using value_type = float;
  using reg = __m256;
  static constexpr int W = 8;

  static reg zero() { return _mm256_setzero_ps(); }
  static reg set1(float v) { return _mm256_set1_ps(v); }
  static reg load(const float* p) { return _mm256_load_ps(p); }
  static reg loadu(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, reg v) { _mm256_store_ps(p, v); }
  static void storeu(float* p, reg v) { _mm256_storeu_ps(p, v); }
  // n in [0, W): masked lanes are neither read (no fault past the end) nor written.
  static __m256i tail_mask(int n) {
    alignas(32) static const int32_t kTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                                   0,  0,  0,  0,  0,  0,  0,  0};
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTable + 8 - n));
  }
  static reg load_partial(const float* p, int n) { return _mm256_maskload_ps(p, tail_mask(n)); }
  static void store_partial(float* p, reg v, int n) { _mm256_maskstore_ps(p, tail_mask(n), v); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
  static reg round(reg x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // 2^n for integral n in [-126, 127]: n + 127 in the exponent field.
  static reg pow2(reg n) {
    const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
  }
  static reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  // Dropout (dropout.h) on W elements: lane i is element base + offsets[i] (uint32, wrapping);
  // scale where lowbias32(idx ^ key) >= threshold, else 0.
  static reg dropout_multiplier(uint32_t base, const int32_t* offsets, uint32_t key,
                                uint32_t threshold, float scale) {
    __m256i x = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(base)),
                                 _mm256_loadu_si256(reinterpret_cast<const __m256i*>(offsets)));
    x = _mm256_xor_si256(x, _mm256_set1_epi32(static_cast<int32_t>(key)));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7FEB352D));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32(static_cast<int32_t>(0x846CA68Bu)));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    // Unsigned x >= t  <=>  max_u(x, t) == x.
    const __m256i t = _mm256_set1_epi32(static_cast<int32_t>(threshold));
    const __m256i keep = _mm256_cmpeq_epi32(_mm256_max_epu32(x, t), x);
    return _mm256_and_ps(_mm256_castsi256_ps(keep), _mm256_set1_ps(scale));
  }
  static float reduce_add(reg v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

}  // namespace mbk::simd::avx2
