// Internal: the per-ISA attention kernels that attention.cc drives. Each ISA's function lives in
// its own translation unit (attention_<isa>.cc) compiled with that ISA's flags; the driver holds
// no ISA-specific code.
#pragma once

#include <cstdint>

#include "ops/attention.h"

namespace mbk::ops {

// The per-thread workspace of one task range, in floats (all multiples of 16, so every part
// starts 64-byte aligned when the whole is).
struct AttentionLayout {
  int64_t n_pad;  // seq_k rounded up to 16: the row length of the gathered Kᵀ and of the scores
  int64_t d_pad;  // head_dim rounded up to 16: the row length of the gathered V
  int64_t kt, vc, s;  // Kᵀ [head_dim, n_pad], V [seq_k, d_pad], scores [kMaxTileRows, n_pad]
  int64_t per_thread;
};

// The most query rows any ISA's tile holds (the scores workspace has this many rows).
constexpr int kMaxTileRows = 8;

AttentionLayout attention_layout(const AttentionArgs& a);

// Tasks are (batch, head, query chunk) in that order: task t is batch t / (H·chunks), head
// t / chunks % H, query rows [c·q_chunk, (c+1)·q_chunk) ∩ [0, Sq) with c = t % chunks.
struct AttentionTasks {
  int64_t chunks, q_chunk;
};

// Runs tasks [t0, t1) on the calling thread with its workspace ws (layout L).
using AttentionRun = void (*)(const AttentionArgs& a, const AttentionTasks& tasks, int64_t t0,
                              int64_t t1, const AttentionLayout& L, float* ws);

namespace scalar {
void attention_f32(const AttentionArgs&, const AttentionTasks&, int64_t, int64_t,
                   const AttentionLayout&, float*);
}
namespace avx2 {
void attention_f32(const AttentionArgs&, const AttentionTasks&, int64_t, int64_t,
                   const AttentionLayout&, float*);
}
namespace avx512 {
void attention_f32(const AttentionArgs&, const AttentionTasks&, int64_t, int64_t,
                   const AttentionLayout&, float*);
}
namespace neon {
void attention_f32(const AttentionArgs&, const AttentionTasks&, int64_t, int64_t,
                   const AttentionLayout&, float*);
}

}  // namespace mbk::ops
