// Internal: the per-ISA attention kernels that attention.cc drives. Each ISA's function lives in
// its own translation unit (attention_<isa>.cc) compiled with that ISA's flags; the driver holds
// no ISA-specific code.
#pragma once

#include <cstdint>

#include "cpu.h"
#include "ops/attention.h"

namespace mbk::ops {

// The per-thread workspace of one task range, in floats (all multiples of 16, so every part
// starts 64-byte aligned when the whole is).
struct AttentionLayout {
  int64_t n_pad;  // seq_k rounded up to 16: the row length of the gathered Kᵀ and of the scores
  int64_t d_pad;  // head_dim rounded up to 16: the row length of the gathered V
  int64_t kt, vc, s;  // Kᵀ [head_dim, n_pad], V [seq_k, d_pad], scores [kMaxTileRows, n_pad]
  int64_t kpos;       // the gathered keys' positions, n_pad int32s
  int64_t per_thread;
};

// The backward's per-thread workspace (floats; every part a multiple of 16 plus 32 floats of
// slack, so a tile reading a whole vector block past a row's end stays inside it).
struct AttentionBackwardLayout {
  int64_t n_pad, d_pad;
  int64_t kt, vt;      // Kᵀ, Vᵀ [head_dim, n_pad]
  int64_t kr, dk, dv;  // K and the dK, dV accumulators [seq_k, d_pad]
  int64_t qb, dob;     // a block of Q and of dctx [kBackwardRows, d_pad]
  int64_t p, ds;       // P and dS of that block [kBackwardRows, n_pad]
  int64_t mult;        // one row's dropout factors [n_pad]
  int64_t kpos;        // key positions, n_pad int32s
  int64_t per_thread;
};

// The most query rows any ISA's tile holds (the scores workspace has this many rows).
constexpr int kMaxTileRows = 8;
// Query rows per block of the backward: the k of the dK and dV tile products.
constexpr int64_t kBackwardRows = 64;

AttentionLayout attention_layout(const AttentionArgs& a);
AttentionBackwardLayout attention_backward_layout(const AttentionArgs& a);

// Tasks are (batch, head, query chunk) in that order: task t is batch t / (H·chunks), head
// t / chunks % H, query rows [c·q_chunk, (c+1)·q_chunk) ∩ [0, Sq) with c = t % chunks.
struct AttentionTasks {
  int64_t chunks, q_chunk;
};

// Runs tasks [t0, t1) on the calling thread with its workspace ws (layout L).
using AttentionRun = void (*)(const AttentionArgs& a, const AttentionTasks& tasks, int64_t t0,
                              int64_t t1, const AttentionLayout& L, float* ws);
// The backward of heads (b·H + h) in [t0, t1) on the calling thread.
using AttentionBackwardRun = void (*)(const AttentionArgs& a, const AttentionGradArgs& g,
                                      int64_t t0, int64_t t1, const AttentionBackwardLayout& L,
                                      float* ws);
// dropout_rows (attention.h) on rows [r0, r1).
using DropoutRowsRun = void (*)(float* x, int64_t ldx, int64_t r0, int64_t r1, int64_t cols,
                                const DropoutMask& m, uint64_t first, const float* residual,
                                int64_t ld_residual);

struct AttentionKernels {
  AttentionRun forward;
  AttentionBackwardRun backward;
  DropoutRowsRun dropout_rows;
};

namespace scalar {
extern const AttentionKernels attention_f32;
}
namespace avx2 {
extern const AttentionKernels attention_f32;
}
namespace avx512 {
extern const AttentionKernels attention_f32;
}
namespace neon {
extern const AttentionKernels attention_f32;
}
namespace avx512_simde {  // attention_avx512.cc built through SIMDe (simd/avx512.h)
extern const AttentionKernels attention_f32;
}

// The table of isa (the scalar one for an ISA not compiled in); dropout.cc uses its dropout_rows.
const AttentionKernels& attention_kernels(Isa isa);

}  // namespace mbk::ops
