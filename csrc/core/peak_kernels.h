// Internal: the per-ISA FMA loops that peak.cc dispatches to. Each namespace's function lives in
// its own translation unit (peak_<isa>.cc) compiled with that ISA's flags.
#pragma once

#include <cstdint>

namespace mbk::peak {

// Runs `iters` rounds of FMAs on independent accumulators, writes a value depending on all of
// them to *sink (so nothing is optimized away) and returns the flops executed.
namespace scalar {
int64_t fma_block_f32(int64_t iters, float* sink);
}  // namespace scalar
namespace avx2 {
int64_t fma_block_f32(int64_t iters, float* sink);
}  // namespace avx2
namespace avx512 {
int64_t fma_block_f32(int64_t iters, float* sink);
}  // namespace avx512
namespace neon {
int64_t fma_block_f32(int64_t iters, float* sink);
}  // namespace neon
namespace avx512_simde {  // peak_avx512.cc built through SIMDe (simd/avx512.h)
int64_t fma_block_f32(int64_t iters, float* sink);
}  // namespace avx512_simde

}  // namespace mbk::peak
