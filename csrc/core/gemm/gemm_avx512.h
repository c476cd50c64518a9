// What the AVX-512 GEMM translation units share: gemm_avx512.cc (fp32, and int8 on AVX-512BW's
// vpmaddwd) and gemm_avx512_vnni.cc (int8 on VNNI's vpdpbusd, compiled with it), each built twice
// (natively and through SIMDe: simd/avx512.h). Everything is in the anonymous namespace, each TU
// its own copy (gemm_impl.h).
#pragma once

// GCC 12 warns inside avx512fintrin.h (_mm512_undefined_ps's self-initialization, GCC PR 105593,
// fixed in GCC 13) wherever max/min/reduce_add or cvtepi32_ps are inlined.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <cstdint>

#include "simd/avx512.h"

namespace mbk::gemm::MBK_AVX512_NS {
namespace {
using namespace simd::MBK_AVX512_NS;  // the intrinsics simd/avx512.h supplies where SIMDe lacks them

struct V : simd::MBK_AVX512_NS::VecF32 {
  static reg min(reg a, reg b) { return _mm512_min_ps(a, b); }
  static reg div(reg a, reg b) { return _mm512_div_ps(a, b); }
  static reg where_positive(reg u, reg x) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(u, _mm512_setzero_ps(), _CMP_GT_OQ), x);
  }
};

// The int8 operands of int8_impl.h's Q that both int8 kernels share: 16 int32 lanes, one column
// each, G elements of type E per lane.
template <class E>
struct Q8Operands {
  using elem = E;
  static constexpr int W = 16;
  using wreg = __m512i;
  using acc = __m512i;
  static acc init(const int32_t* p) { return _mm512_load_si512(p); }
  static wreg load(const E* p) { return _mm512_load_si512(p); }
  static wreg broadcast(const E* p) {
    int32_t v;
    __builtin_memcpy(&v, p, sizeof v);
    return _mm512_set1_epi32(v);
  }
  static __m512 to_float(acc c) { return _mm512_cvtepi32_ps(c); }
  static wreg operand(acc c) { return c; }
  static void keep(acc&) {}
  // Rounds half to even (MXCSR's default). The stores narrow the result, in [-127, 127], with the
  // saturating vpmovsdw / vpmovsdb, exact here: SIMDe 0.7.4 lacks the truncating ones.
  static __m512i to_int32(__m512 y) { return _mm512_cvtps_epi32(y); }
};

// The tile of both int8 kernels: 6 x 64 like the fp32 kernel (24 zmm accumulators, 4 panel loads
// and 1 broadcast live: 29 of the 32; vpmaddwd's product takes one more before its vpaddd).
constexpr int kInt8MR = 6, kInt8NV = 4;

}  // namespace
}  // namespace mbk::gemm::MBK_AVX512_NS
