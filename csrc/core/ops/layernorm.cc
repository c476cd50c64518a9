#include "ops/layernorm.h"

#include <algorithm>

#include "cpu.h"
#include "gemm/gemm_kernels.h"

namespace mbk::ops {
namespace {

// Below this many elements one thread beats an OpenMP fork/join.
constexpr int64_t kParallelMinElems = int64_t(1) << 14;

// dst = x + res (or x) over rows [r0, r1).
void sum_rows(const float* x, const float* res, float* dst, int64_t r0, int64_t r1, int64_t cols) {
  for (int64_t i = r0 * cols; i < r1 * cols; ++i) dst[i] = res != nullptr ? x[i] + res[i] : x[i];
}

}  // namespace

void layernorm_forward(const float* x, const float* res, const float* w, const float* b, float eps,
                       float* y, int64_t rows, int64_t cols, int num_threads) {
  if (rows <= 0 || cols <= 0) return;
  const gemm::IsaGemm& kern = gemm::isa_gemm(active_isa());
  const int nt = rows * cols >= kParallelMinElems ? std::max(num_threads, 1) : 1;
  gemm::parallel(nt, [&](int tid, int threads) {
    const int64_t r0 = rows * tid / threads, r1 = rows * (tid + 1) / threads;
    sum_rows(x, res, y, r0, r1, cols);
    kern.layernorm_rows(y + r0 * cols, cols, r1 - r0, cols, w, b, eps);
  });
}

}  // namespace mbk::ops
