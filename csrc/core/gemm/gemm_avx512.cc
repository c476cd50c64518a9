// f32_gemm_6x64__avx512: AVX-512F, a 6 x 64 tile of C in 24 zmm accumulators; per k 4 panel
// loads, 6 broadcasts of A and 24 FMAs (29 of the 32 zmm registers live in the loop). 6 x 64 beat
// 8 x 32 and 14 x 32 on MobileBERT's shapes (docs/design.md "MobileBERT facts", measured).
// q8_gemm_6x64__avx512: the int8 GEMM on vpmaddwd (below) for AVX-512 CPUs without VNNI, which
// run q8_gemm_6x64__avx512vnni (gemm_avx512_vnni.cc) instead; the tile is in gemm_avx512.h.
// Compiled with the avx512 flags (mbk_isa_sources); the templates are in gemm_impl.h and
// int8_impl.h. Built twice, the second time as avx512_simde (f32_gemm_6x64__avx512_simde): see
// MBK_AVX512_NS in simd/avx512.h.

#include "gemm/gemm_avx512.h"

namespace mbk::gemm::MBK_AVX512_NS {
namespace {
// int8 widened to int16, 2 k per lane: vpmaddwd (AVX-512BW) sums each lane's two products exactly
// in int32, vpaddd accumulates (32 products per 2 instructions). The kernel for AVX-512 CPUs
// without VNNI (Skylake-SP); AVX2's reasons for int16 over vpmaddubsw hold here too (gemm_avx2.cc).
struct Q : Q8Operands<int16_t> {
  static constexpr int G = 2;
  static constexpr int offset = 0;
  static acc dot(acc c, wreg a, wreg w) { return _mm512_add_epi32(_mm512_madd_epi16(a, w), c); }
  static void store(int16_t* p, __m512 y) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtsepi32_epi16(to_int32(y)));
  }
};
}  // namespace
}  // namespace mbk::gemm::MBK_AVX512_NS

#include "gemm/epilogue_backward_impl.h"
#include "gemm/int8_impl.h"

namespace mbk::gemm::MBK_AVX512_NS {

const IsaGemm& f32_gemm() {
  static const IsaGemm kernels{{6, 64, "f32_gemm_6x64__" MBK_AVX512_NAME}, &run_rows<V, 6, 4>,
                               &layernorm_rows<V>, &layernorm_backward_rows<V>,
                               &activation_backward_rows<V>,
                               int8_gemm<V, Q, kInt8MR, kInt8NV>("q8_gemm_6x64__" MBK_AVX512_NAME),
                               q8_gemm_vnni()};
  return kernels;
}

}  // namespace mbk::gemm::MBK_AVX512_NS
