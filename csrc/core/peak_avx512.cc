// The FMA-throughput loop for avx512 (16 lanes): 16 zmm accumulators + 2 zmm constants of the 32
// registers, compiled with the avx512 flags (mbk_isa_sources). The loop is in peak_impl.h. Built
// twice, the second time as avx512_simde: see MBK_AVX512_NS in simd/avx512.h.
#include "peak_impl.h"
#include "simd/avx512.h"

namespace mbk::peak::MBK_AVX512_NS {

int64_t fma_block_f32(int64_t iters, float* sink) {
  return detail::fma_block<simd::MBK_AVX512_NS::VecF32, 16>(iters, sink);
}

}  // namespace mbk::peak::MBK_AVX512_NS
