// MobileBERT embeddings forward, fp32, and the torch-free pieces of its backward:
//   e = word_embeddings[ids] (or inputs_embeds)       [B, S, E]
//   t = [e shifted left (next token), e, e shifted right (previous token)], zeros at the ends
//                                                     [B, S, 3E]   (trigram; else t = e)
//   y = N(t Wᵀ + bias + position_embeddings[pos] + token_type_embeddings[type])   [B, S, hidden]
// The Linear (embedding_transformation) is one packed-weight GEMM whose epilogue adds the
// position + token-type rows (written into y first, read back as the residual) and applies
// NoNorm at store or LayerNorm per row tile. HF's MobileBertEmbeddings always has the Linear
// (E -> hidden without trigram); without it (the op's transformation_weight=None) t itself is
// the sum's first term and the norm runs on csrc/core's standalone norm kernels. Norm::none gives
// the pre-norm sum, which the backward needs.
#pragma once

#include <cstddef>
#include <cstdint>

#include "gemm/gemm.h"

namespace mbk::ops {

struct EmbeddingArgs {
  int64_t batch = 0, seq = 0;
  const int64_t* input_ids = nullptr;       // [B, S] contiguous, or null: inputs_embeds
  const float* inputs_embeds = nullptr;     // [B, S, E] contiguous: e given (no lookup)
  const int64_t* token_type_ids = nullptr;  // [B, S] contiguous, or null: all 0
  const int64_t* position_ids = nullptr;    // [B, S] contiguous, or null: 0..S-1 in every row
  const float* word_embeddings = nullptr;   // [vocab, E] contiguous
  int64_t vocab = 0, embedding_size = 0;
  bool trigram = true;
  // [hidden, 3E (trigram) or E] with its bias, or null: no Linear (then 3E or E == hidden).
  const gemm::PackedWeights* transformation = nullptr;
  const float* position_embeddings = nullptr;           // [max_positions, hidden]
  int64_t max_positions = 0;
  const float* token_type_embeddings = nullptr;  // [type_vocab, hidden]
  int64_t type_vocab = 0;
  int64_t hidden = 0;
  gemm::Norm norm = gemm::Norm::nonorm;  // nonorm, layernorm, or none (the pre-norm sum)
  const float* norm_weight = nullptr;    // [hidden]
  const float* norm_bias = nullptr;      // [hidden]
  float eps = 0.0f;                      // layernorm only
  float* out = nullptr;                  // [B·S, hidden], row stride ld_out (== hidden without
  int64_t ld_out = 0;                    // a transformation)
};

// Floats of workspace embedding_forward needs (the [B·S, 3E] trigram rows, [B·S, E] without).
size_t embedding_workspace_floats(const EmbeddingArgs& a);

// Runs the forward. workspace: embedding_workspace_floats(a) floats, or null to use a
// per-thread buffer that grows once; on return it holds t, the Linear's input rows [B·S, 3E or E]
// (the backward's weight gradient reuses them). Throws std::invalid_argument naming the argument
// on inconsistent sizes or an id out of range (with the id and its position).
void embedding_forward(const EmbeddingArgs& a, int num_threads, float* workspace = nullptr);

// Only t, the Linear's input rows [B·S, 3E or E] (as embedding_forward leaves them in its
// workspace), after the same checks: for a backward given the saved pre-norm sum.
void embedding_rows(const EmbeddingArgs& a, float* t);

// The trigram concat's backward: dt [B·S, 3E] = dL/dt → de [B·S, E] = dL/de, where token r's
// [next, cur, prev] segments came from tokens r + 1, r, r - 1 of its sequence:
// de[r] = dt[r, E:2E] + dt[r - 1, 0:E] (s > 0) + dt[r + 1, 2E:3E] (s + 1 < seq).
void trigram_backward(const float* dt, int64_t rows, int64_t seq, int64_t e, float* de);

// out[index[r]] += src[r] for r < rows, skipping rows whose index is `skip` (padding_idx; -1 for
// none): the gradient of a row lookup (src [rows, cols] row stride ld_src; out [*, cols]
// contiguous). Serial in r, so repeated indices sum in row order, the same on every run.
void scatter_add_rows(const float* src, int64_t ld_src, const int64_t* index, int64_t rows,
                      int64_t cols, int64_t skip, float* out);

}  // namespace mbk::ops
