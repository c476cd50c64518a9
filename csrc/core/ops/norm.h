// The block's norm over whole rows, as the fused ops apply it outside a GEMM epilogue:
// y = N(x [+ res]) with N NoNorm (x * w + b) or LayerNorm (eps inside the sqrt), on the active
// ISA's kernels (ops/nonorm.h, ops/layernorm.h), and its backward. Arrays are row-major and
// contiguous.
#pragma once

#include <cstdint>

#include "gemm/gemm.h"

namespace mbk::ops {

// x, res (may be null), y [rows, cols]; w, b [cols]. y may be x or res: each element is read
// before it is written. Throws std::invalid_argument for Norm::none.
void norm_forward(gemm::Norm norm, const float* x, const float* res, const float* w,
                  const float* b, float eps, float* y, int64_t rows, int64_t cols,
                  int num_threads);

// The backward of y = N(t) over t [rows, n] (a residual's gradient is gt's: the caller forms
// t = x + res). Given g = dL/dy [rows, n]: gt = dL/dt [rows, n], gw and gb [n] the norm
// parameters' gradients, and gsum [n] = the column sums of gt (the gradient of a bias added
// before the norm), or null. Column sums are summed in fixed row chunks added in order
// (deterministic; LayerNorm's also independent of num_threads).
//   NoNorm: gt = g * w, gw = sum g * t, gb = sum g, gsum = gb * w (ops/nonorm.h).
//   LayerNorm: gemm/epilogue_backward.h's layernorm_backward, the core's one LayerNorm backward;
//   gt may be t (each row of t is read before that row of gt is written).
// Throws std::invalid_argument for Norm::none.
void norm_backward(gemm::Norm norm, const float* g, const float* t, const float* w, float eps,
                   float* gt, float* gw, float* gb, float* gsum, int64_t rows, int64_t n,
                   int num_threads);

}  // namespace mbk::ops
