// The threaded drivers of epilogue_backward.h: fixed row chunks, per-chunk partial column sums,
// and their reduction in chunk order. The per-row kernels are the active ISA's (IsaGemm).
#include "gemm/epilogue_backward.h"

#include <algorithm>
#include <stdexcept>

#include "gemm/gemm_kernels.h"
#include "scratch.h"

namespace mbk::gemm {
namespace {

// Rows per chunk: fixed (not derived from the thread count), so the column sums' rounding does
// not depend on it. 64 rows keep a chunk's inputs in L2 and give 2 threads enough chunks to
// balance at 128 tokens.
constexpr int64_t kChunkRows = 64;
// Below this many elements one thread beats an OpenMP fork/join.
constexpr int64_t kParallelMinElems = int64_t(1) << 14;

// Runs kernel(r0, r1, partials) over the chunks of [0, rows) on up to num_threads threads, each
// chunk with its own `sums` partial rows of n floats (zeroed first), then writes
// outs[s] = sum over chunks of partial row s, in chunk order (null outs are skipped).
template <class F>
void chunked_column_sums(int64_t rows, int64_t n, int num_threads, float* const* outs, int sums,
                         F&& kernel) {
  if (rows <= 0) {
    for (int s = 0; s < sums; ++s)
      if (outs[s] != nullptr) std::fill(outs[s], outs[s] + n, 0.0f);
    return;
  }
  const int64_t chunks = (rows + kChunkRows - 1) / kChunkRows;
  const int64_t ld = (n + 15) / 16 * 16;  // partial rows on separate cache lines
  const size_t floats = static_cast<size_t>(chunks * sums * ld);
  float* base = thread_scratch(floats);
  std::fill(base, base + floats, 0.0f);
  int nt = static_cast<int>(std::min<int64_t>(std::max(num_threads, 1), chunks));
  if (rows * n < kParallelMinElems) nt = 1;
  parallel(nt, [&](int tid, int threads) {
    for (int64_t ch = chunks * tid / threads; ch < chunks * (tid + 1) / threads; ++ch) {
      float* p = base + ch * sums * ld;
      kernel(ch * kChunkRows, std::min(rows, (ch + 1) * kChunkRows), p, ld);
    }
  });
  for (int s = 0; s < sums; ++s) {
    float* out = outs[s];
    if (out == nullptr) continue;
    std::copy(base + s * ld, base + s * ld + n, out);
    for (int64_t ch = 1; ch < chunks; ++ch) {
      const float* p = base + (ch * sums + s) * ld;
      for (int64_t c = 0; c < n; ++c) out[c] += p[c];
    }
  }
}

}  // namespace

void layernorm_backward(const float* g, const float* t, const float* w, float eps, float* gt,
                        float* gw, float* gb, float* gt_sum, int64_t rows, int64_t n, Isa isa,
                        int num_threads) {
  if (n <= 0) return;
  const IsaGemm& kern = isa_gemm(isa);
  float* const outs[] = {gw, gb, gt_sum};
  const bool want_sum = gt_sum != nullptr;
  chunked_column_sums(rows, n, num_threads, outs, 3, [&](int64_t r0, int64_t r1, float* p, int64_t ld) {
    kern.layernorm_backward_rows(g, t, w, eps, gt, r0, r1, n, p, p + ld,
                                 want_sum ? p + 2 * ld : nullptr);
  });
}

void activation_backward(Act act, float* u, const float* gh, float* gu, float* gu_sum,
                         int64_t rows, int64_t n, Isa isa, int num_threads) {
  if (act == Act::none)
    throw std::invalid_argument("activation_backward: act must be relu or gelu, got none");
  if (n <= 0) return;
  const IsaGemm& kern = isa_gemm(isa);
  float* const outs[] = {gu_sum};
  chunked_column_sums(rows, n, num_threads, outs, 1, [&](int64_t r0, int64_t r1, float* p, int64_t) {
    kern.activation_backward_rows(act, u, gh, gu, r0, r1, n, p);
  });
}

}  // namespace mbk::gemm
