// Backward of the GEMM epilogues (gemm.h): the elementwise parts of linear_norm's and
// ffn_stack's gradients, fused with the column sums that give the bias and norm-parameter
// gradients. The gradient GEMMs themselves are the caller's (csrc/torch uses ATen's matmul).
//
// Column sums are bitwise deterministic whatever the thread count: rows are cut into fixed chunks
// of kChunkRows, each chunk summed by one thread in row order into its own partial row, and the
// partial rows added in chunk order. All arrays are row-major and contiguous ([rows, n] and [n]).
#pragma once

#include <cstdint>

#include "cpu.h"
#include "gemm/gemm.h"

namespace mbk::gemm {

// The forward was y = LayerNorm(t) * w + b over each row of t [rows, n] (eps inside the sqrt).
// Given g = dL/dy: gt = dL/dt, gw = sum_rows g * t_hat, gb = sum_rows g, and, when gt_sum is not
// null, gt_sum = sum_rows gt (the gradient of a bias added before the norm).
void layernorm_backward(const float* g, const float* t, const float* w, float eps, float* gt,
                        float* gw, float* gb, float* gt_sum, int64_t rows, int64_t n, Isa isa,
                        int num_threads);

// The forward was h = act(u) (relu, or gelu's erf form) over u [rows, n]. Given gh = dL/dh:
// gu = gh * act'(u), u is overwritten with act(u) (the recomputed forward activation, which the
// weight gradient of the next GEMM needs), and gu_sum = sum_rows gu (the bias gradient).
void activation_backward(Act act, float* u, const float* gh, float* gu, float* gu_sum,
                         int64_t rows, int64_t n, Isa isa, int num_threads);

}  // namespace mbk::gemm
