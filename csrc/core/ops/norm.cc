#include "ops/norm.h"

#include <stdexcept>

#include "cpu.h"
#include "gemm/epilogue_backward.h"
#include "ops/layernorm.h"
#include "ops/nonorm.h"

namespace mbk::ops {

void norm_forward(gemm::Norm norm, const float* x, const float* res, const float* w,
                  const float* b, float eps, float* y, int64_t rows, int64_t cols,
                  int num_threads) {
  switch (norm) {
    case gemm::Norm::nonorm:
      nonorm_forward(x, res, w, b, y, rows, cols, num_threads);
      return;
    case gemm::Norm::layernorm:
      layernorm_forward(x, res, w, b, eps, y, rows, cols, num_threads);
      return;
    case gemm::Norm::none:
      break;
  }
  throw std::invalid_argument("norm_forward: norm must be nonorm or layernorm");
}

void norm_backward(gemm::Norm norm, const float* g, const float* t, const float* w, float eps,
                   float* gt, float* gw, float* gb, float* gsum, int64_t rows, int64_t n,
                   int num_threads) {
  switch (norm) {
    case gemm::Norm::nonorm:
      nonorm_backward(g, t, nullptr, w, gt, gw, gb, rows, n, num_threads);
      if (gsum != nullptr)  // sum_r g w = (sum_r g) w: no second pass over the rows
        for (int64_t j = 0; j < n; ++j) gsum[j] = gb[j] * w[j];
      return;
    case gemm::Norm::layernorm:
      gemm::layernorm_backward(g, t, w, eps, gt, gw, gb, gsum, rows, n, active_isa(), num_threads);
      return;
    case gemm::Norm::none:
      break;
  }
  throw std::invalid_argument("norm_backward: norm must be nonorm or layernorm");
}

}  // namespace mbk::ops
