// q8_gemm_6x64__avx512vnni: the int8 GEMM on AVX-512 VNNI's vpdpbusd, which sums 4 u8 x s8
// products into each int32 lane, 64 per instruction: twice vpdpwssd's 32 (int16 pairs) and four
// times vpmaddwd + vpaddd's per instruction (gemm_avx512.cc's kernel for CPUs without VNNI). Its
// sums go straight into int32, so unlike vpmaddubsw's int16 pair sums nothing saturates; A must be
// unsigned: quantized A is stored as q + 128 (offset), and the panel's comp row (-128 * sum_k w,
// gemm.h) starts the accumulators, so the sums are the integers every other kernel gets. Packed
// with G = 4; the tile is in gemm_avx512.h; chosen at run time where the CPU has VNNI (cpu.h
// int8_dot_supported).
//
// A file of its own because it needs -mavx512vnni (mbk_isa_sources, avx512_vnni), which adds only
// the VNNI instructions to the avx512 flags. Built twice like gemm_avx512.cc: the second time
// through SIMDe (gemm_avx512_vnni_simde.cc), whose vpdpbusd is emulated.
#include "gemm/gemm_avx512.h"

namespace mbk::gemm::MBK_AVX512_NS {
namespace {
struct Q : Q8Operands<uint8_t> {
  static constexpr int G = 4;
  static constexpr int offset = 128;
  static acc dot(acc c, wreg a, wreg w) { return _mm512_dpbusd_epi32(c, a, w); }
#if !defined(MBK_AVX512_SIMDE)
  // GCC 12 otherwise copies every accumulator through a scratch register around its vpdpbusd and
  // stores it to the stack each group (objdump); held in a register at the end of each group, the
  // 24 stay in their registers and the loop is the 4 loads, 6 broadcasts and 24 vpdpbusd.
  static void keep(acc& c) { asm("" : "+v"(c)); }
#endif
  // q + 128 as u8 is q as int8 with its top bit flipped.
  static void store(uint8_t* p, __m512 y) {
    const __m128i q = _mm512_cvtsepi32_epi8(to_int32(y));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm_xor_si128(q, _mm_set1_epi8(-128)));
  }
};
}  // namespace
}  // namespace mbk::gemm::MBK_AVX512_NS

#include "gemm/int8_impl.h"

namespace mbk::gemm::MBK_AVX512_NS {

const Int8Gemm& q8_gemm_vnni() {
#if defined(MBK_AVX512_SIMDE)
  static const Int8Gemm kernel = int8_gemm<V, Q, kInt8MR, kInt8NV>("q8_gemm_6x64__avx512vnni_simde");
#else
  static const Int8Gemm kernel = int8_gemm<V, Q, kInt8MR, kInt8NV>("q8_gemm_6x64__avx512vnni");
#endif
  return kernel;
}

}  // namespace mbk::gemm::MBK_AVX512_NS
