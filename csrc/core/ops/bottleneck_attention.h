// bottleneck_attention forward: the attention half of a MobileBERT block on h [B, S, hidden].
//
// Mode "shared" (MobileBERT): one GEMM over h computes [b | s | V] side by side from the stacked
// weight [Wi; Wa; Wv] with per-segment epilogues (NoNorm on b and s, bias only on V: NoNorm's
// per-column scale and shift are 1 and 0 on V's columns; LayerNorm runs per segment after the
// GEMM), then [Q | K] = s [Wq; Wk]ᵀ, attention per head with the key mask (ops/attention.h: no
// B×H×S×S buffer unless scores are asked for), and out = N(ctx Woᵀ + bo + b) on the packed GEMM.
// The other modes stack their weights the same way (see BottleneckAttentionWeights).
// All intermediates live in one workspace; the only outputs are out and the optional scores.
#pragma once

#include <cstddef>
#include <cstdint>

#include "dropout.h"
#include "gemm/gemm.h"
#include "ops/attention.h"

namespace mbk::ops {

enum class AttentionMode : int {
  shared,      // b = N(h Wi), s = N(h Wa); Q, K from s; V from h; residual b
  bottleneck,  // b = N(h Wi); Q, K, V from b; residual b
  full,        // b = N(h Wi); Q, K, V from h; residual b
  none,        // Q, K, V from h; residual h
};

struct BottleneckAttentionWeights {
  AttentionMode mode;
  // The GEMM over h, weights stacked along N with their biases:
  //   shared [Wi; Wa; Wv], bottleneck [Wi], full [Wi; Wq; Wk; Wv], none [Wq; Wk; Wv].
  const gemm::PackedWeights* over_h;
  // The GEMM over the bottleneck: shared [Wq; Wk] (over s), bottleneck [Wq; Wk; Wv] (over b);
  // null for full and none.
  const gemm::PackedWeights* over_bottleneck;
  const gemm::PackedWeights* output;  // Wo [width, width] with bo
  gemm::Norm norm;                    // nonorm or layernorm, every norm of the block
  float eps;
  // [width] each; input_* unused for none, attention_* used by shared only.
  const float *input_norm_weight, *input_norm_bias;
  const float *attention_norm_weight, *attention_norm_bias;
  const float *output_norm_weight, *output_norm_bias;
  int64_t heads;
};

// Where each projection lands in the two GEMMs' outputs A (over h) and B (over the bottleneck),
// as segment indices of `width` columns (below a_segments in A, else in B minus a_segments).
struct ProjectionLayout {
  int64_t a_segments, b_segments;  // widths of A and B in segments (B: 0 = no second GEMM)
  int q, k, v;
  bool residual_in_a;  // the residual is A's segment 0 (b), else h itself
};
ProjectionLayout projection_layout(AttentionMode mode);

// Points at's q, k, v (as [B, H, S, D] views) into A [rows, a_segments·width] and B
// [rows, b_segments·width]; at.head_dim must be set.
void set_projections(AttentionArgs& at, const ProjectionLayout& L, const float* a,
                     const float* b, int64_t width, int64_t seq);

// Training's dropout sites (dropout.h; reference.py's streams): on the attention probabilities
// [B, H, S, S] and on the output projection ctx Woᵀ + bo [B, S, width], before the residual.
struct BottleneckAttentionDropout {
  DropoutMask attn, hidden;
};

// Floats of workspace bottleneck_attention_forward needs.
size_t bottleneck_attention_workspace_floats(const BottleneckAttentionWeights& w, int64_t batch,
                                             int64_t seq, int num_threads);

// h [batch * seq, hidden] (row stride ldh); key_mask [batch, seq] (nonzero = attend) or null;
// out [batch * seq, width] contiguous (width = hidden in mode none, else the bottleneck width);
// scores [batch, heads, seq, seq] contiguous or null. workspace: the floats above, or null for
// a per-thread buffer. Throws std::invalid_argument naming what is inconsistent.
void bottleneck_attention_forward(const BottleneckAttentionWeights& w, const float* h,
                                  int64_t ldh, int64_t batch, int64_t seq,
                                  const uint8_t* key_mask, float* out, float* scores,
                                  int num_threads, float* workspace = nullptr,
                                  const BottleneckAttentionDropout& dropout = {});

}  // namespace mbk::ops
