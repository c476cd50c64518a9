#include "ops/ffn_stack.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "gemm/gemm_kernels.h"
#include "ops/norm.h"
#include "scratch.h"

namespace mbk::ops {
namespace {

// A thread's rows go through the stack in tiles of at most this many rows: the tile's
// intermediate (rows x inter floats, 128 KiB at 64 x 512) and its slice of x stay in L2 while
// the FFNs' weights stream through.
constexpr int64_t kMaxTileRows = 64;
// Below this many FLOPs one thread beats an OpenMP fork/join.
constexpr double kParallelMinFlops = 2e5;

void check_ffns(const FfnWeights* ffns, int count) {
  if (count < 1) throw std::invalid_argument("ffn_stack_forward: expected at least one FFN");
  const int64_t width = ffns[0].intermediate->k();
  const Isa isa = ffns[0].intermediate->isa();
  for (int i = 0; i < count; ++i) {
    const gemm::PackedWeights& w1 = *ffns[i].intermediate;
    const gemm::PackedWeights& w2 = *ffns[i].output;
    const std::string at = "ffn_stack_forward: FFN " + std::to_string(i) + ": ";
    if (w1.k() != width || w2.n() != width || w2.k() != w1.n())
      throw std::invalid_argument(at + "expected W1 [inter, " + std::to_string(width) +
                                  "] and W2 [" + std::to_string(width) + ", inter], got W1 [" +
                                  std::to_string(w1.n()) + ", " + std::to_string(w1.k()) +
                                  "] and W2 [" + std::to_string(w2.n()) + ", " +
                                  std::to_string(w2.k()) + "]");
    if (w1.isa() != isa || w2.isa() != isa)
      throw std::invalid_argument(at + "weights packed for different ISAs");
  }
}

// One FFN on n rows of a row tile: h = act(in W1ᵀ + b1) into the thread's tile buffer, then
// out = norm(h W2ᵀ + b2 + in) at store. The residual may be `out` itself (FFNs after the first
// update the tile in place): the epilogue reads each element before writing it.
void fused_ffn(const gemm::IsaGemm& kern, const FfnWeights& f, gemm::Act act, gemm::Norm norm,
               const float* in, int64_t ldin, int64_t n, float* h, float* out, int64_t ldout) {
  const int64_t inter = f.intermediate->n();
  gemm::Epilogue e1;
  e1.act = act;
  kern.run(gemm::gemm_args(in, ldin, *f.intermediate, h, inter, e1), 0, n, 0,
           f.intermediate->panels());
  gemm::Epilogue e2;
  e2.residual = in;
  e2.ld_residual = ldin;
  e2.norm = norm;
  e2.norm_weight = f.norm_weight;
  e2.norm_bias = f.norm_bias;
  e2.eps = f.eps;
  kern.run(gemm::gemm_args(h, inter, *f.output, out, ldout, e2), 0, n, 0, f.output->panels());
}

// The same FFN keeping its intermediates (contiguous rows): h = act(in W1ᵀ + b1), the pre-norm
// t = h W2ᵀ + b2 + in, and next = norm(t). The arithmetic is fused_ffn's (NoNorm's t * w + b is
// one FMA on the rounded t in both), so next is its output bit for bit.
void saved_ffn(const gemm::IsaGemm& kern, const FfnWeights& f, gemm::Act act, gemm::Norm norm,
               const float* in, int64_t ldin, int64_t n, float* h, float* t, float* next) {
  const int64_t width = f.intermediate->k();
  fused_ffn(kern, f, act, gemm::Norm::none, in, ldin, n, h, t, width);
  norm_forward(norm, t, nullptr, f.norm_weight, f.norm_bias, f.eps, next, n, width, 1);
}

}  // namespace

void ffn_stack_forward(const float* x, int64_t ldx, int64_t rows, const FfnWeights* ffns,
                       int count, gemm::Act act, gemm::Norm norm, float* y, int64_t ldy,
                       int num_threads, const FfnSaved* saved) {
  check_ffns(ffns, count);
  if (act == gemm::Act::none || norm == gemm::Norm::none)
    throw std::invalid_argument("ffn_stack_forward: act must be relu or gelu, norm nonorm or layernorm");
  const int64_t width = ffns[0].intermediate->k();
  if (saved != nullptr) {
    for (int i = 1; i < count; ++i)
      if (ffns[i].intermediate->n() != ffns[0].intermediate->n())
        throw std::invalid_argument("ffn_stack_forward: saving needs every FFN the same inter");
    if (act != gemm::Act::relu || ldy != width)
      throw std::invalid_argument("ffn_stack_forward: saving needs act relu and ldy == width");
  }
  if (rows <= 0 || width == 0) return;
  const gemm::IsaGemm& kern = gemm::isa_gemm(ffns[0].intermediate->isa());
  const int mr = ffns[0].intermediate->mr();
  int64_t inter = 0;
  double flops = 0.0;
  for (int i = 0; i < count; ++i) {
    inter = std::max(inter, ffns[i].intermediate->n());
    flops += 4.0 * double(rows) * double(width) * double(ffns[i].intermediate->n());
  }
  const int64_t row_blocks = (rows + mr - 1) / mr;
  int nt = static_cast<int>(std::min<int64_t>(std::max(num_threads, 1), row_blocks));
  if (flops < kParallelMinFlops) nt = 1;
  // Tile rows: a thread's share of row blocks split into equal tiles of at most kMaxTileRows.
  const int64_t blocks_per_thread = (row_blocks + nt - 1) / nt;
  const int64_t max_tile_blocks = std::max<int64_t>(1, kMaxTileRows / mr);
  const int64_t tiles_per_thread = (blocks_per_thread + max_tile_blocks - 1) / max_tile_blocks;
  const int64_t tile_rows = (blocks_per_thread + tiles_per_thread - 1) / tiles_per_thread * mr;
  float* hbuf = saved != nullptr ? nullptr
                 : thread_scratch(static_cast<size_t>(nt * tile_rows * std::max<int64_t>(inter, 1)));

  gemm::parallel(nt, [&](int tid, int threads) {
    const int64_t r0 = std::min(rows, row_blocks * tid / threads * mr);
    const int64_t r1 = std::min(rows, row_blocks * (tid + 1) / threads * mr);
    float* h = saved != nullptr ? nullptr : hbuf + tid * tile_rows * inter;
    for (int64_t t0 = r0; t0 < r1; t0 += tile_rows) {
      const int64_t n = std::min(tile_rows, r1 - t0);
      const float* in = x + t0 * ldx;
      int64_t ldin = ldx;
      float* out = y + t0 * ldy;
      for (int i = 0; i < count; ++i) {
        if (saved != nullptr) {
          float* next = i + 1 < count ? saved->x + (i * rows + t0) * width : out;
          saved_ffn(kern, ffns[i], act, norm, in, ldin, n, saved->h + (i * rows + t0) * inter,
                    saved->t + (i * rows + t0) * width, next);
          in = next;
          ldin = width;
        } else {
          fused_ffn(kern, ffns[i], act, norm, in, ldin, n, h, out, ldy);
          in = out;
          ldin = ldy;
        }
      }
    }
  });
}

}  // namespace mbk::ops
