#include "dropout.h"

#include <algorithm>

#include "cpu.h"
#include "gemm/gemm_kernels.h"
#include "ops/attention_kernels.h"

namespace mbk {

void dropout_rows(float* x, int64_t ldx, int64_t rows, int64_t cols, const DropoutMask& m,
                  uint64_t first, const float* residual, int64_t ld_residual, int num_threads) {
  if (!m.active) {
    if (residual != nullptr)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) x[r * ldx + c] += residual[r * ld_residual + c];
    return;
  }
  // The vector hash lives beside the attention kernels, which apply it to the probabilities.
  const ops::DropoutRowsRun run = ops::attention_kernels(active_isa()).dropout_rows;
  const int nt = rows * cols >= (1 << 15) ? std::max(num_threads, 1) : 1;
  gemm::parallel(nt, [&](int tid, int threads) {
    run(x, ldx, rows * tid / threads, rows * (tid + 1) / threads, cols, m, first, residual,
        ld_residual);
  });
}

void dropout_rows(float* x, int64_t ldx, int64_t rows, int64_t cols, double p, int64_t seed,
                  uint32_t stream, const float* residual, int64_t ld_residual, int num_threads) {
  dropout_rows(x, ldx, rows, cols, dropout_mask(p, seed, stream), 0, residual, ld_residual,
               num_threads);
}

}  // namespace mbk
