#include "ops/norm.h"

#include <stdexcept>

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

}  // namespace mbk::ops
