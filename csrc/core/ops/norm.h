// The block's norm over whole rows, as the fused ops apply it outside a GEMM epilogue:
// y = N(x [+ res]) with N NoNorm (x * w + b) or LayerNorm (eps inside the sqrt), on the active
// ISA's kernels (ops/nonorm.h, ops/layernorm.h). Arrays are row-major and contiguous.
#pragma once

#include <cstdint>

#include "gemm/gemm.h"

namespace mbk::ops {

// x, res (may be null), y [rows, cols]; w, b [cols]. y may be x or res: each element is read
// before it is written. Throws std::invalid_argument for Norm::none.
void norm_forward(gemm::Norm norm, const float* x, const float* res, const float* w,
                  const float* b, float eps, float* y, int64_t rows, int64_t cols,
                  int num_threads);

}  // namespace mbk::ops
