// Attention entry point: argument checks, the task split over threads, the workspace, and the
// run-time dispatch to the active ISA's kernel (attention_<isa>.cc).
#include "ops/attention.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "cpu.h"
#include "gemm/gemm_kernels.h"
#include "ops/attention_kernels.h"
#include "scratch.h"

namespace mbk::ops {
namespace {

// Below this many FLOPs one thread beats an OpenMP fork/join.
constexpr double kParallelMinFlops = 2e5;
// Query chunks are at least this many rows: each chunk of a new (batch, head) gathers its keys.
constexpr int64_t kMinChunkRows = 16;

int64_t round16(int64_t x) { return (x + 15) / 16 * 16; }

void check(const AttentionArgs& a, const char* op = "attention_forward") {
  const auto fail = [op](const std::string& what) {
    throw std::invalid_argument(std::string(op) + ": " + what);
  };
  if (a.batch < 0 || a.heads < 0 || a.seq_q < 0 || a.seq_k < 0 || a.head_dim < 0)
    fail("sizes must be >= 0, got batch=" + std::to_string(a.batch) + " heads=" +
         std::to_string(a.heads) + " seq_q=" + std::to_string(a.seq_q) + " seq_k=" +
         std::to_string(a.seq_k) + " head_dim=" + std::to_string(a.head_dim));
  if (a.batch * a.heads * a.seq_q == 0) return;
  if (a.seq_k == 0) fail("seq_k must be >= 1 when there are queries (softmax over no keys)");
  if (a.q == nullptr || a.k == nullptr || a.v == nullptr)
    fail("q, k and v must not be null");
  if (a.ctx == nullptr && std::string(op) == "attention_forward") fail("ctx must not be null");
}

}  // namespace

const AttentionKernels& attention_kernels(Isa isa) {
  switch (isa) {
#ifdef MBK_HAVE_AVX2
    case Isa::avx2: return avx2::attention_f32;
#endif
#ifdef MBK_HAVE_AVX512
    case Isa::avx512: return avx512::attention_f32;
#endif
#ifdef MBK_HAVE_NEON
    case Isa::neon: return neon::attention_f32;
#endif
#ifdef MBK_HAVE_AVX512_SIMDE
    case Isa::avx512_simde: return avx512_simde::attention_f32;
#endif
    default: return scalar::attention_f32;
  }
}

AttentionLayout attention_layout(const AttentionArgs& a) {
  AttentionLayout L;
  L.n_pad = round16(a.seq_k);
  L.d_pad = round16(a.head_dim);
  L.kt = round16(a.head_dim * L.n_pad);
  L.vc = round16(a.seq_k * L.d_pad);
  L.s = kMaxTileRows * L.n_pad;
  L.kpos = L.n_pad;
  L.per_thread = L.kt + L.vc + L.s + L.kpos;
  return L;
}

AttentionBackwardLayout attention_backward_layout(const AttentionArgs& a) {
  AttentionBackwardLayout L;
  L.n_pad = round16(a.seq_k);
  L.d_pad = round16(a.head_dim);
  const auto part = [](int64_t floats) { return round16(floats) + 32; };
  L.kt = L.vt = part(a.head_dim * L.n_pad);
  L.kr = L.dk = L.dv = part(a.seq_k * L.d_pad);
  L.qb = L.dob = part(kBackwardRows * L.d_pad);
  L.p = L.ds = part(kBackwardRows * L.n_pad);
  L.mult = L.kpos = part(L.n_pad);
  L.per_thread = L.kt + L.vt + L.kr + L.dk + L.dv + L.qb + L.dob + L.p + L.ds + L.mult + L.kpos;
  return L;
}

size_t attention_workspace_floats(const AttentionArgs& a, int num_threads) {
  return static_cast<size_t>(attention_layout(a).per_thread * std::max(num_threads, 1));
}

void attention_forward(const AttentionArgs& a, int num_threads, float* workspace) {
  check(a);
  const int64_t bh = a.batch * a.heads;
  if (bh * a.seq_q == 0) return;
  const AttentionLayout L = attention_layout(a);
  const AttentionRun run = attention_kernels(active_isa()).forward;
  // Enough tasks to balance the threads, chunks of at least kMinChunkRows query rows.
  int nt = std::max(num_threads, 1);
  const double flops = 4.0 * double(bh) * double(a.seq_q) * double(a.seq_k) * double(a.head_dim);
  if (flops < kParallelMinFlops) nt = 1;
  const int64_t max_chunks = std::max<int64_t>(1, a.seq_q / kMinChunkRows);
  const int64_t chunks = std::min(max_chunks, (4 * int64_t(nt) + bh - 1) / bh);
  AttentionTasks tasks;
  tasks.q_chunk = (a.seq_q + chunks - 1) / chunks;
  tasks.chunks = (a.seq_q + tasks.q_chunk - 1) / tasks.q_chunk;
  const int64_t total = bh * tasks.chunks;
  nt = static_cast<int>(std::min<int64_t>(nt, total));
  float* ws = workspace != nullptr ? workspace : thread_scratch(attention_workspace_floats(a, nt));
  gemm::parallel(nt, [&](int tid, int threads) {
    // Contiguous task ranges: a thread's consecutive tasks share (batch, head) and its gather.
    run(a, tasks, total * tid / threads, total * (tid + 1) / threads, L,
        ws + tid * L.per_thread);
  });
}

size_t attention_backward_workspace_floats(const AttentionArgs& a, int num_threads) {
  return static_cast<size_t>(attention_backward_layout(a).per_thread * std::max(num_threads, 1));
}

void attention_backward(const AttentionArgs& a, const AttentionGradArgs& g, int num_threads,
                        float* workspace) {
  check(a, "attention_backward");
  const int64_t bh = a.batch * a.heads;
  if (bh * a.seq_q == 0) return;
  if (g.dctx == nullptr || g.dq == nullptr || g.dk == nullptr || g.dv == nullptr)
    throw std::invalid_argument("attention_backward: dctx, dq, dk and dv must not be null");
  const AttentionBackwardLayout L = attention_backward_layout(a);
  const AttentionBackwardRun run = attention_kernels(active_isa()).backward;
  // One task per (batch, head): dK and dV sum over every query, so a head is one thread's.
  int nt = std::max(num_threads, 1);
  const double flops = 10.0 * double(bh) * double(a.seq_q) * double(a.seq_k) * double(a.head_dim);
  if (flops < kParallelMinFlops) nt = 1;
  nt = static_cast<int>(std::min<int64_t>(nt, bh));
  float* ws = workspace != nullptr ? workspace
                                   : thread_scratch(attention_backward_workspace_floats(a, nt));
  gemm::parallel(nt, [&](int tid, int threads) {
    run(a, g, bh * tid / threads, bh * (tid + 1) / threads, L, ws + tid * L.per_thread);
  });
}

}  // namespace mbk::ops
