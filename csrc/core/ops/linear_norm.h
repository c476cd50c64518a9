// linear_norm forward: y = norm(x Wᵀ + bias [+ residual]), one packed-weight GEMM whose epilogue
// adds the residual and applies NoNorm at store, or LayerNorm over each finished row tile.
// MobileBERT's attention output, FFN output and output bottleneck.
#pragma once

#include <cstdint>

#include "gemm/gemm.h"

namespace mbk::ops {

// x [rows, K] (row stride ldx), W packed with its bias (K = w.k(), N = w.n()), residual
// [rows, N] (row stride ld_residual) or null, norm_weight / norm_bias [N], y [rows, N] (row
// stride ldy, overlapping neither x nor residual). norm is nonorm or layernorm (eps: layernorm's).
void linear_norm_forward(const float* x, int64_t ldx, int64_t rows, const gemm::PackedWeights& w,
                         const float* residual, int64_t ld_residual, gemm::Norm norm,
                         const float* norm_weight, const float* norm_bias, float eps, float* y,
                         int64_t ldy, int num_threads);

}  // namespace mbk::ops
