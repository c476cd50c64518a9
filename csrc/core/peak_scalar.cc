// The FMA-throughput loop in plain C++ (width-1 "vectors", 8 accumulators), compiled with no extra
// ISA flags: the peak on CPUs without a SIMD ISA of ours. The loop is in peak_impl.h.
#include "peak_impl.h"
#include "simd/scalar.h"

namespace mbk::peak::scalar {

int64_t fma_block_f32(int64_t iters, float* sink) {
  return detail::fma_block<simd::scalar::VecF32, 8>(iters, sink);
}

}  // namespace mbk::peak::scalar
