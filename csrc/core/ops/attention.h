// Multi-head attention forward, fp32: ctx = softmax(Q Kᵀ / √D + mask) V per batch and head.
//
// Operands are addressed through strides, so both layouts the callers have work without a copy:
// the projections' output [B, S, H·D] (batch S·H·D, head D, row H·D) and the torch op's
// [B, H, S, D] (batch H·S·D, head S·D, row D). The head dimension is always contiguous.
//
// - key_mask [B, Sk] (nonzero = attend; null = attend everywhere). Masked keys get probability
//   0 exactly: they are left out of the work (a padded batch costs only its real keys). A query
//   whose keys are all masked gets the mean of V over all keys, as softmax over a row of equal
//   finfo.min scores gives in the reference.
// - Softmax subtracts the row maximum (stable for any score range).
// - scores, when not null: the pre-softmax QKᵀ/√D, [B, H, Sq, Sk] contiguous, masked entries
//   -FLT_MAX (torch.finfo(float32).min). Without it no B×H×Sq×Sk buffer exists: each thread holds
//   the scores of a few query rows at a time.
// - dropout: when active, the probabilities are dropped after the softmax's sum (dropout.h;
//   element (b, h, i, j) has index ((b·H + h)·Sq + i)·Sk + j, the reference's [B, H, Sq, Sk]).
// - Threads: num_threads (the caller's count, e.g. torch.get_num_threads()) over (batch, head,
//   query block) tasks with OpenMP. The active ISA (cpu.h) picks the kernels.
//
// attention_backward: dq, dk, dv from dctx (and the gradient of the returned scores, if any),
// flash style: per (batch, head) the attended keys are gathered once, and for each block of query
// rows P is recomputed from q and k (row max and sum over the whole row, so no running statistics
// are stored), dP = dctx Vᵀ, dS = P (dP − rowsum(P ∘ dP)) with the dropout mask applied to dP and
// P, and dV += P_droppedᵀ dctx, dK += dSᵀ Q, dQ = dS K. No B×H×Sq×Sk buffer; threads over
// (batch, head), each head summed by one thread in a fixed order, so the result does not depend
// on the thread count.
#pragma once

#include <cstddef>
#include <cstdint>

#include "dropout.h"

namespace mbk::ops {

// Element (b, h, s, d) of an operand is data[b * batch + h * head + s * row + d].
struct HeadStrides {
  int64_t batch, head, row;
};

struct AttentionArgs {
  int64_t batch = 0, heads = 0, seq_q = 0, seq_k = 0, head_dim = 0;
  const float* q = nullptr;  // [B, H, Sq, D]
  HeadStrides q_strides{};
  const float* k = nullptr;  // [B, H, Sk, D]
  HeadStrides k_strides{};
  const float* v = nullptr;  // [B, H, Sk, D]
  HeadStrides v_strides{};
  const uint8_t* key_mask = nullptr;  // [B, Sk], element (b, j) at key_mask[b * mask_batch_stride + j]
  int64_t mask_batch_stride = 0;
  float* ctx = nullptr;  // [B, H, Sq, D] output; may not overlap q, k or v
  HeadStrides ctx_strides{};
  float* scores = nullptr;  // optional [B, H, Sq, Sk] contiguous output
  DropoutMask dropout{};    // on the probabilities (inactive: no dropout)
};

// The backward's operands besides AttentionArgs' q, k, v, mask and dropout (its ctx and scores
// are not used). dq, dk, dv may not overlap each other or any input.
struct AttentionGradArgs {
  const float* dctx = nullptr;  // [B, H, Sq, D]
  HeadStrides dctx_strides{};
  const float* dscores = nullptr;  // optional [B, H, Sq, Sk] contiguous: gradient of the scores
  float* dq = nullptr;
  HeadStrides dq_strides{};
  float* dk = nullptr;
  HeadStrides dk_strides{};
  float* dv = nullptr;
  HeadStrides dv_strides{};
};

// Floats of workspace attention_forward needs for these shapes and threads (a few query rows of
// scores plus one head's gathered K and V per thread).
size_t attention_workspace_floats(const AttentionArgs& a, int num_threads);

// Runs the forward. workspace: attention_workspace_floats(a, num_threads) floats, or null to use
// a per-thread buffer that grows once and is then reused. Throws std::invalid_argument naming the
// argument on negative sizes or missing pointers.
void attention_forward(const AttentionArgs& a, int num_threads, float* workspace = nullptr);

size_t attention_backward_workspace_floats(const AttentionArgs& a, int num_threads);

// The backward (see the top of this file); workspace as attention_forward's.
void attention_backward(const AttentionArgs& a, const AttentionGradArgs& g, int num_threads,
                        float* workspace = nullptr);

}  // namespace mbk::ops
