// MobileBertConfig read from the config.json that `save_pretrained` (mbkernels or Hugging Face)
// writes: the fields the C++ engine needs, with Hugging Face's names and defaults.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mbk::engine {

struct MobileBertConfig {
  int64_t vocab_size = 30522, hidden_size = 512, num_hidden_layers = 24, num_attention_heads = 4;
  int64_t intermediate_size = 512, max_position_embeddings = 512, type_vocab_size = 2;
  int64_t embedding_size = 128, intra_bottleneck_size = 128, num_feedforward_networks = 4;
  int64_t num_labels = 2, pad_token_id = 0;
  std::string hidden_act = "relu", normalization_type = "no_norm";
  double layer_norm_eps = 1e-12;
  bool trigram_input = true, use_bottleneck = true, use_bottleneck_attention = false;
  bool key_query_shared_bottleneck = true, classifier_activation = true;
  std::vector<std::string> architectures;  // e.g. {"MobileBertForMaskedLM"}; may be empty
  // An int8 checkpoint (mbkernels.quantize): quantization_config.quant_method "mbkernels-int8",
  // version 1; its Linears are read from their I8 weights and scales. Empty: float weights.
  std::string quant_method;
  // quantization_config.weight_bits (7 or 8): the int8 weights lie in [-(2^(bits-1) - 1), 2^(bits-1) - 1].
  int64_t weight_bits = 8;

  // Reads path (config.json); fields it lacks keep HF's defaults (above). Throws
  // std::runtime_error naming the file and field on a malformed value, and naming the field
  // when the engine does not support its value (use_bottleneck = false, an activation other than
  // relu/gelu, ...).
  static MobileBertConfig from_json_file(const std::string& path);

  // Where Q and K come from: "shared" (the shared attention bottleneck; V from h), "bottleneck"
  // (use_bottleneck_attention: Q, K, V from the input bottleneck) or "full" (Q, K, V from h).
  std::string attention_mode() const;
  int64_t head_size() const { return intra_bottleneck_size / num_attention_heads; }
};

}  // namespace mbk::engine
