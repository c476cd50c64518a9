// LayerNorm of x [+ residual] over the last dimension, fp32, forward and backward: the standalone
// layernorm op (the fused ops apply it in their GEMM epilogues). Arrays are row-major, contiguous.
#pragma once

#include <cstdint>

namespace mbk::ops {

// y = LayerNorm(x + res) * w + b per row (res may be null), on the active ISA.
void layernorm_forward(const float* x, const float* res, const float* w, const float* b, float eps,
                       float* y, int64_t rows, int64_t cols, int num_threads);

// Given g = dL/dy: gx = dL/dx (also the residual's gradient), gw, gb (column sums, bitwise
// independent of num_threads).
void layernorm_backward(const float* g, const float* x, const float* res, const float* w,
                        float eps, float* gx, float* gw, float* gb, int64_t rows, int64_t cols,
                        int num_threads);

}  // namespace mbk::ops
