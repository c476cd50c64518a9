// One MobileBERT layer, and a stack of them, for inference (no dropout, no scores), as the paper
// draws it:
//
//   a = bottleneck_attention(h)                 b = N(h Wi), attention, N(ctx Wo + bo + b)
//   f = ffn_stack(a)                            x = N(act(x W1 + b1) W2 + b2 + x), per FFN
//   y = N(f Wout + bout + h)                    the output bottleneck back to the hidden width
//
// (without an output bottleneck, the teacher's BERT-like layer, y = f). Every piece is the core
// op of its own header (ops/bottleneck_attention.h, ops/ffn_stack.h, ops/linear_norm.h); the
// intermediates live in one workspace. Users: the C++ engine (engine/model.cc) and _C's
// encoder_forward (csrc/python/encoder.cc).
#pragma once

#include <cstddef>
#include <cstdint>

#include "gemm/gemm.h"
#include "ops/bottleneck_attention.h"
#include "ops/ffn_stack.h"

namespace mbk::ops {

// Views, owned by the caller. The layer's norm kind is attention.norm: the FFNs and the output
// bottleneck use the same (MobileBERT's normalization_type).
struct LayerWeights {
  BottleneckAttentionWeights attention;  // h [rows, hidden] -> a [rows, width]
  const FfnWeights* ffns;                // ffn_count FFNs of width `width`
  int ffn_count;
  gemm::Act act;  // the FFNs' activation (relu or gelu)
  // The output bottleneck: W [hidden, width] packed with its bias, the residual is the layer's
  // input h. Null: no bottleneck (use_bottleneck=False), the FFN output is the layer's output
  // (width must then equal hidden).
  const gemm::PackedWeights* output;
  const float *output_norm_weight, *output_norm_bias;  // [hidden]
  float eps;                                           // the output norm's (layernorm only)
};

// Floats of workspace layer_forward needs for batch x seq tokens (>= what any smaller batch or
// seq needs). Throws std::invalid_argument like layer_forward.
size_t layer_workspace_floats(const LayerWeights& w, int64_t batch, int64_t seq, int num_threads);

// h [batch * seq, hidden] -> out [batch * seq, hidden], both contiguous, not overlapping;
// key_mask [batch, seq] (nonzero = attend) or null. workspace: layer_workspace_floats floats
// (64-byte aligned is best), or null for a per-thread buffer. Throws std::invalid_argument naming
// what is inconsistent.
void layer_forward(const LayerWeights& w, const float* h, float* out, int64_t batch, int64_t seq,
                   const uint8_t* key_mask, int num_threads, float* workspace = nullptr);

// Floats of workspace encoder_forward needs: the largest layer's, plus one [rows, hidden] buffer.
size_t encoder_workspace_floats(const LayerWeights* layers, int count, int64_t batch, int64_t seq,
                                int num_threads);

// `count` layers on h [batch * seq, hidden] (contiguous), in place: h holds the last layer's
// output on return. Every layer maps hidden to hidden. workspace as above (encoder_workspace_floats)
// or null for a per-thread buffer.
void encoder_forward(const LayerWeights* layers, int count, float* h, int64_t batch, int64_t seq,
                     const uint8_t* key_mask, int num_threads, float* workspace = nullptr);

}  // namespace mbk::ops
