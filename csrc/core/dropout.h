// Counter-based dropout masks, the C++ side of mbkernels/ops/dropout.py: element idx of a dropout
// site is kept when lowbias32(idx ^ key) >= threshold, key = lowbias32(lowbias32(seed) ^ stream ·
// golden ratio), threshold = min(floor(p · 2³²), 2³² − 1), and a kept element is scaled by
// 1 / (1 − p). Everything is uint32 arithmetic (products wrap), the element index counts modulo 2³²,
// so these masks equal Python's and Triton's bit for bit; a backward recomputes its forward's mask
// from the seed instead of storing it.
//
// The per-ISA vector form is VecF32::dropout_multiplier (simd/<isa>.h): the same hash on W lanes.
// dropout_rows (dropout.cc) applies a site to a [rows, cols] tensor on the active ISA.
#pragma once

#include <cstdint>

namespace mbk {

// Wellons' lowbias32.
inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  return x ^ (x >> 16);
}

// One dropout site of one op call. p == 0 (or an inactive site) keeps everything with scale 1.
struct DropoutMask {
  bool active = false;
  uint32_t key = 0, threshold = 0;
  float scale = 1.0f;  // 1 / (1 - p) rounded to float, as torch's float32 `x * (1.0 / (1.0 - p))`
};

// The mask of (seed, stream) at probability p in [0, 1) (p <= 0: inactive).
inline DropoutMask dropout_mask(double p, int64_t seed, uint32_t stream) {
  DropoutMask m;
  if (!(p > 0.0)) return m;
  m.active = true;
  m.key = mix32(mix32(static_cast<uint32_t>(seed)) ^ (stream * 0x9E3779B9u));
  const double t = p * 4294967296.0;  // exact: a power-of-two scaling; truncated as Python's int()
  m.threshold = t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(t);
  m.scale = static_cast<float>(1.0 / (1.0 - p));
  return m;
}

// Whether element idx (taken modulo 2³²) is kept.
inline bool dropout_keep(const DropoutMask& m, uint64_t idx) {
  return !m.active || mix32(static_cast<uint32_t>(idx) ^ m.key) >= m.threshold;
}

// The factor element idx is multiplied by: scale if kept, else 0.
inline float dropout_factor(const DropoutMask& m, uint64_t idx) {
  return !m.active ? 1.0f : dropout_keep(m, idx) ? m.scale : 0.0f;
}

// x[r, c] = x[r, c] · factor(first + r · cols + c) [+ residual[r, c]] for r < rows, c < cols: a
// dropout site over a [rows, cols] tensor (row strides ldx, ld_residual; residual may be null or
// x itself). The hidden and embedding dropout sites, forward and backward (the backward applies
// the same mask to the gradient).
void dropout_rows(float* x, int64_t ldx, int64_t rows, int64_t cols, const DropoutMask& m,
                  uint64_t first, const float* residual, int64_t ld_residual, int num_threads);

// The same with the mask of (p, seed, stream) and first = 0: what _C.dropout_rows binds.
void dropout_rows(float* x, int64_t ldx, int64_t rows, int64_t cols, double p, int64_t seed,
                  uint32_t stream, const float* residual, int64_t ld_residual, int num_threads);

}  // namespace mbk
