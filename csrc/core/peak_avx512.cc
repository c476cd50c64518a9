// The FMA-throughput loop for avx512 (16 lanes): 16 zmm accumulators + 2 zmm constants of the 32
// registers, compiled with the avx512 flags (mbk_isa_sources). The loop is in peak_impl.h.
#include "peak_impl.h"
#include "simd/avx512.h"

namespace mbk::peak::avx512 {

int64_t fma_block_f32(int64_t iters, float* sink) {
  return detail::fma_block<simd::avx512::VecF32, 16>(iters, sink);
}

}  // namespace mbk::peak::avx512
