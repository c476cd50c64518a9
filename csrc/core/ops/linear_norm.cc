#include "ops/linear_norm.h"

#include <stdexcept>

namespace mbk::ops {

void linear_norm_forward(const float* x, int64_t ldx, int64_t rows, const gemm::PackedWeights& w,
                         const float* residual, int64_t ld_residual, gemm::Norm norm,
                         const float* norm_weight, const float* norm_bias, float eps, float* y,
                         int64_t ldy, int num_threads) {
  if (norm == gemm::Norm::none)
    throw std::invalid_argument("linear_norm_forward: norm must be nonorm or layernorm");
  gemm::Epilogue ep;
  ep.residual = residual;
  ep.ld_residual = ld_residual;
  ep.norm = norm;
  ep.norm_weight = norm_weight;
  ep.norm_bias = norm_bias;
  ep.eps = eps;
  gemm::gemm(x, ldx, rows, w, y, ldy, ep, num_threads);
}

}  // namespace mbk::ops
