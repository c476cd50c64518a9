// f32_gemm_6x16__avx2: AVX2 + FMA, a 6 x 16 tile of C in 12 ymm accumulators; per k 2 panel
// loads, 6 broadcasts of A and 12 FMAs (15 of the 16 ymm registers live in the loop).
// q8_gemm_4x16__avx2: int8 values widened to int16, a 4 x 16 tile in 8 ymm int32 accumulators;
// per 2 k 2 panel loads, 4 broadcasts of A, 8 vpmaddwd and 8 vpaddd. vpmaddubsw (u8 x s8, 4 k per
// lane) saturates its int16 pair sums; made exact with |a| and sign(a) * w it took 3.5 multiply-port
// uops per 32 products on Zen 3 (vpsignb and vpabsb share those ports) against vpmaddwd's 2.
// q8w7_gemm_5x16__avx2: for weights in [-63, 63] (Int8Variant::narrow), on vpmaddubsw: A as u8
// (q + 128) times the int8 weights, pairs summed into int16 (at most 2 * 255 * 63 = 32130: no
// saturation), then vpmaddwd by ones into int32 lanes of 4 products; per 4 k 2 panel loads, 5
// broadcasts, 10 each of vpmaddubsw, vpmaddwd and vpaddd (15 ymm live). Twice the k per load and per
// broadcast of the int16 kernel and half its panel bytes: measured 1.5-1.8x the fp32 GEMM at
// MobileBERT's shapes against the int16 kernel's 1.1-1.4x (5x16 over 4x16 and 3x24 by a few %).
// Compiled with the avx2 flags (mbk_isa_sources); the templates are in gemm_impl.h and int8_impl.h.
#include <immintrin.h>

#include "simd/avx2.h"

namespace mbk::gemm::avx2 {
namespace {
struct V : simd::avx2::VecF32 {
  static reg min(reg a, reg b) { return _mm256_min_ps(a, b); }
  static reg div(reg a, reg b) { return _mm256_div_ps(a, b); }
  static reg where_positive(reg u, reg x) {
    return _mm256_and_ps(_mm256_cmp_ps(u, _mm256_setzero_ps(), _CMP_GT_OQ), x);
  }
};

// The int8 operands of int8_impl.h's Q that both int8 kernels share: 8 int32 lanes, one column
// each, 4 bytes of elements of type E per lane.
template <class E>
struct Q8Operands {
  using elem = E;
  using wreg = __m256i;
  using acc = __m256i;
  static constexpr int W = 8;
  static acc init(const int32_t* p) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(p)); }
  static wreg load(const E* p) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(p)); }
  static wreg broadcast(const E* p) {
    int32_t v;
    __builtin_memcpy(&v, p, sizeof v);
    return _mm256_set1_epi32(v);
  }
  static wreg operand(acc c) { return c; }
  static __m256 to_float(acc c) { return _mm256_cvtepi32_ps(c); }
  static void keep(acc& c) { asm("" : "+x"(c)); }
  // Rounds half to even (the default MXCSR mode); the values are integral in [-127, 127] by then.
  static __m128i to_int16(__m256 y) {
    const __m256i i = _mm256_cvtps_epi32(y);
    return _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
  }
};

struct Q : Q8Operands<int16_t> {
  static constexpr int G = 2;
  static constexpr int offset = 0;
  static acc dot(acc c, wreg a, wreg w) { return _mm256_add_epi32(_mm256_madd_epi16(a, w), c); }
  static void store(int16_t* p, __m256 y) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), to_int16(y)); }
};

struct Q7 : Q8Operands<uint8_t> {
  static constexpr int G = 4;
  static constexpr int offset = 128;
  static acc dot(acc c, wreg a, wreg w) {
    return _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(a, w), _mm256_set1_epi16(1)), c);
  }
  // q + 128 as u8 is q as int8 with its top bit flipped.
  static void store(uint8_t* p, __m256 y) {
    const __m128i q16 = to_int16(y);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_xor_si128(_mm_packs_epi16(q16, q16), _mm_set1_epi8(-128)));
  }
};
}  // namespace
}  // namespace mbk::gemm::avx2

#include "gemm/epilogue_backward_impl.h"
#include "gemm/int8_impl.h"

namespace mbk::gemm::avx2 {

const IsaGemm& f32_gemm() {
  static const IsaGemm kernels{{6, 16, "f32_gemm_6x16__avx2"}, &run_rows<V, 6, 2>,
                               &layernorm_rows<V>, &layernorm_backward_rows<V>,
                               &activation_backward_rows<V>,
                               int8_gemm<V, Q, 4, 2>("q8_gemm_4x16__avx2"), {},
                               int8_gemm<V, Q7, 5, 2>("q8w7_gemm_5x16__avx2", int8_weight_max(7))};
  return kernels;
}

}  // namespace mbk::gemm::avx2
