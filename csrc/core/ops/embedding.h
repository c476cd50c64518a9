// MobileBERT embeddings forward, fp32:
//   e = word_embeddings[ids]                          [B, S, E]
//   t = [e shifted left (next token), e, e shifted right (previous token)], zeros at the ends
//                                                     [B, S, 3E]   (trigram; else t = e)
//   y = N(t Wᵀ + bias + position_embeddings[pos] + token_type_embeddings[type])   [B, S, hidden]
// The Linear (embedding_transformation) is one packed-weight GEMM whose epilogue adds the
// position + token-type rows (written into y first, read back as the residual) and applies
// NoNorm at store or LayerNorm per row tile. HF's MobileBertEmbeddings always has the Linear
// (E -> hidden without trigram), so it is required here.
#pragma once

#include <cstddef>
#include <cstdint>

#include "gemm/gemm.h"

namespace mbk::ops {

struct EmbeddingArgs {
  int64_t batch = 0, seq = 0;
  const int64_t* input_ids = nullptr;       // [B, S] contiguous
  const int64_t* token_type_ids = nullptr;  // [B, S] contiguous, or null: all 0
  const int64_t* position_ids = nullptr;    // [B, S] contiguous, or null: 0..S-1 in every row
  const float* word_embeddings = nullptr;   // [vocab, E] contiguous
  int64_t vocab = 0, embedding_size = 0;
  bool trigram = true;
  const gemm::PackedWeights* transformation = nullptr;  // [hidden, 3E (trigram) or E] with its bias
  const float* position_embeddings = nullptr;           // [max_positions, hidden]
  int64_t max_positions = 0;
  const float* token_type_embeddings = nullptr;  // [type_vocab, hidden]
  int64_t type_vocab = 0;
  int64_t hidden = 0;
  gemm::Norm norm = gemm::Norm::nonorm;  // nonorm or layernorm
  const float* norm_weight = nullptr;    // [hidden]
  const float* norm_bias = nullptr;      // [hidden]
  float eps = 0.0f;                      // layernorm only
  float* out = nullptr;                  // [B·S, hidden], row stride ld_out
  int64_t ld_out = 0;
};

// Floats of workspace embedding_forward needs (the [B·S, 3E] trigram rows, [B·S, E] without).
size_t embedding_workspace_floats(const EmbeddingArgs& a);

// Runs the forward. workspace: embedding_workspace_floats(a) floats, or null to use a
// per-thread buffer that grows once. Throws std::invalid_argument naming the argument on
// inconsistent sizes or an id out of range (with the id and its position).
void embedding_forward(const EmbeddingArgs& a, int num_threads, float* workspace = nullptr);

}  // namespace mbk::ops
