// NoNorm entry points: argument edge cases, the backward workspace, and the run-time dispatch to
// the active ISA's kernel (the per-ISA kernels are in nonorm_<isa>.cc).
#include "ops/nonorm.h"

#include <algorithm>
#include <vector>

#include "cpu.h"
#include "ops/nonorm_kernels.h"

namespace mbk::ops {
namespace {

struct F32Kernels {
  void (*forward)(const NoNormFwdArgs<float>&);
  void (*backward)(const NoNormBwdArgs<float>&);
};

F32Kernels f32_kernels(Isa isa) {
  switch (isa) {
#ifdef MBK_HAVE_AVX2
    case Isa::avx2: return {avx2::nonorm_forward_f32, avx2::nonorm_backward_f32};
#endif
#ifdef MBK_HAVE_AVX512
    case Isa::avx512: return {avx512::nonorm_forward_f32, avx512::nonorm_backward_f32};
#endif
#ifdef MBK_HAVE_NEON
    case Isa::neon: return {neon::nonorm_forward_f32, neon::nonorm_backward_f32};
#endif
#ifdef MBK_HAVE_AVX512_SIMDE
    case Isa::avx512_simde:
      return {avx512_simde::nonorm_forward_f32, avx512_simde::nonorm_backward_f32};
#endif
    default: return {scalar::nonorm_forward_f32, scalar::nonorm_backward_f32};
  }
}

template <typename T>
void backward_with_workspace(NoNormBwdArgs<T> a, void (*kernel)(const NoNormBwdArgs<T>&)) {
  if (a.rows == 0) {
    std::fill(a.gw, a.gw + a.cols, T(0));
    std::fill(a.gb, a.gb + a.cols, T(0));
    return;
  }
  if (a.cols == 0) return;
  a.num_threads = std::max(a.num_threads, 1);
  a.nchunks = static_cast<int>(std::min<int64_t>(a.num_threads, a.rows));
  constexpr int64_t kLinePad = 64 / sizeof(T);
  a.ld = (a.cols + kLinePad - 1) / kLinePad * kLinePad;
  std::vector<T> ws(static_cast<size_t>(2 * a.nchunks * a.ld));
  a.ws = ws.data();
  kernel(a);
}

}  // namespace

void nonorm_forward(const float* x, const float* res, const float* w, const float* b, float* y,
                    int64_t rows, int64_t cols, int num_threads) {
  if (rows == 0 || cols == 0) return;
  f32_kernels(active_isa()).forward({x, res, w, b, y, rows, cols, std::max(num_threads, 1)});
}

void nonorm_forward(const double* x, const double* res, const double* w, const double* b,
                    double* y, int64_t rows, int64_t cols, int num_threads) {
  if (rows == 0 || cols == 0) return;
  scalar::nonorm_forward_f64({x, res, w, b, y, rows, cols, std::max(num_threads, 1)});
}

void nonorm_backward(const float* g, const float* x, const float* res, const float* w, float* gx,
                     float* gw, float* gb, int64_t rows, int64_t cols, int num_threads) {
  backward_with_workspace<float>(
      {g, x, res, w, gx, gw, gb, nullptr, 0, rows, cols, 0, num_threads},
      f32_kernels(active_isa()).backward);
}

void nonorm_backward(const double* g, const double* x, const double* res, const double* w,
                     double* gx, double* gw, double* gb, int64_t rows, int64_t cols,
                     int num_threads) {
  backward_with_workspace<double>(
      {g, x, res, w, gx, gw, gb, nullptr, 0, rows, cols, 0, num_threads},
      scalar::nonorm_backward_f64);
}

}  // namespace mbk::ops
