// LayerNorm of x [+ residual] over the last dimension, fp32: the standalone layernorm op's forward
// (the fused ops apply it in their GEMM epilogues). Arrays are row-major, contiguous. Its backward
// is ops::norm_backward (ops/norm.h).
#pragma once

#include <cstdint>

namespace mbk::ops {

// y = LayerNorm(x + res) * w + b per row (res may be null), on the active ISA.
void layernorm_forward(const float* x, const float* res, const float* w, const float* b, float eps,
                       float* y, int64_t rows, int64_t cols, int num_threads);

}  // namespace mbk::ops
