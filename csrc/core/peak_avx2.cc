// The FMA-throughput loop for avx2 (8 lanes): 12 ymm accumulators + 2 ymm constants of the 16
// registers, compiled with the avx2 flags (mbk_isa_sources). The loop is in peak_impl.h.
#include "peak_impl.h"
#include "simd/avx2.h"

namespace mbk::peak::avx2 {

int64_t fma_block_f32(int64_t iters, float* sink) {
  return detail::fma_block<simd::avx2::VecF32, 12>(iters, sink);
}

}  // namespace mbk::peak::avx2
