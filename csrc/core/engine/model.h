// The C++ MobileBERT inference engine: no torch, no Python. Loads a checkpoint folder written by
// `save_pretrained` (config.json + model.safetensors), packs every weight once for the active
// ISA's microkernels, and preallocates one activation arena for max_batch x max_seq tokens, so a
// forward allocates nothing (the FFN stack's per-thread tile buffer grows once, on the first
// call). The layers are ops::encoder_forward (ops/layer.h): per layer bottleneck_attention,
// ffn_stack and the output bottleneck's linear_norm, the core ops the Python package runs.
//
//   mbk::engine::MobileBert model("checkpoint/", {/*max_batch=*/8, /*max_seq=*/128, /*threads=*/2});
//   const float* h = model.encode(batch);            // [B·S, hidden]
//   const float* logits = model.mlm_logits(batch);   // [B·S, vocab]  (ForMaskedLM checkpoints)
//
// Outputs live in the arena and stay valid until the next call. Not thread-safe: one call at a
// time per model (the call itself runs num_threads OpenMP threads).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/weights.h"
#include "ops/ffn_stack.h"
#include "ops/layer.h"

namespace mbk::engine {

struct EngineOptions {
  int64_t max_batch = 1;
  int64_t max_seq = 128;
  int num_threads = 1;
};

// One batch of token ids, right- or left-padded as the caller likes.
struct Batch {
  int64_t batch = 0, seq = 0;
  const int64_t* input_ids = nullptr;       // [B, S]
  const int64_t* token_type_ids = nullptr;  // [B, S] or null (all 0)
  const uint8_t* attention_mask = nullptr;  // [B, S], 1 = attend, or null (attend everywhere)
};

class MobileBert {
 public:
  // Throws std::runtime_error naming the file, tensor or config field that is missing or not
  // supported; std::invalid_argument for bad options.
  MobileBert(const std::string& folder, const EngineOptions& options);

  const MobileBertConfig& config() const { return config_; }
  const EngineOptions& options() const { return options_; }
  bool has_mlm_head() const { return weights_.mlm_decoder != nullptr; }
  bool has_classifier() const { return weights_.classifier != nullptr; }
  // Checkpoint tensors the engine does not use (e.g. an NSP head); empty for the task models.
  const std::vector<std::string>& unused_tensors() const { return weights_.unused; }
  size_t arena_bytes() const { return arena_.size() * sizeof(float); }

  // The last hidden state [B·S, hidden_size].
  const float* encode(const Batch& b);
  // Masked-LM logits [B·S, vocab_size] (throws if the checkpoint has no MLM head).
  const float* mlm_logits(const Batch& b);
  // Sequence-classification logits [B, num_labels] from the pooled [CLS] row (throws if the
  // checkpoint has no classifier).
  const float* sequence_logits(const Batch& b);

 private:
  void check(const Batch& b) const;

  MobileBertConfig config_;
  EngineOptions options_;
  ModelWeights weights_;
  std::vector<std::vector<ops::FfnWeights>> ffn_ops_;  // per layer, pointing into weights_
  std::vector<ops::LayerWeights> layer_ops_;            // per layer, pointing into weights_, ffn_ops_
  std::vector<float> arena_;
  // Views into arena_, each sized for max_batch x max_seq rows.
  float *h0_, *embed_ws_, *layer_ws_;
  float *head_, *logits_, *pooled_;
};

}  // namespace mbk::engine
