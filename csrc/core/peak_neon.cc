// The FMA-throughput loop for neon (4 lanes): 16 q-register accumulators + 2 constants of the 32
// registers (fmla). On x86 this TU compiles through SIMDe and is never the one peak.cc picks
// (best_isa() never chooses emulated NEON). The loop is in peak_impl.h.
#include "peak_impl.h"
#include "simd/neon.h"

namespace mbk::peak::neon {

int64_t fma_block_f32(int64_t iters, float* sink) {
  return detail::fma_block<simd::neon::VecF32, 16>(iters, sink);
}

}  // namespace mbk::peak::neon
