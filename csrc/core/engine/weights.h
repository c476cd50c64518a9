// MobileBERT's weights for the C++ engine: read from a safetensors checkpoint by their Hugging
// Face names (the state-dict keys in docs/design.md "MobileBERT facts"; with or without the
// "mobilebert." prefix that task models add) and packed once for one ISA's GEMM microkernels,
// biases included.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cpu.h"
#include "engine/config.h"
#include "engine/safetensors.h"
#include "gemm/gemm.h"

namespace mbk::engine {

using Packed = std::unique_ptr<gemm::PackedWeights>;

// A Linear followed by a norm (NoNorm or LayerNorm): the norm's weight and bias beside the
// packed Linear.
struct DenseNorm {
  Packed dense;
  std::vector<float> norm_weight, norm_bias;
};

// One layer's tensors, owned; the engine hands them to ops::layer_forward through ops::LayerWeights
// views (ops/layer.h). The attention's projections are stacked as ops/bottleneck_attention.h
// takes them: one GEMM over h and one over the bottleneck.
struct LayerTensors {
  Packed over_h;           // shared [Wi; Wa; Wv], bottleneck [Wi], full [Wi; Wq; Wk; Wv]
  Packed over_bottleneck;  // shared [Wq; Wk] (over s), bottleneck [Wq; Wk; Wv] (over b); full: null
  std::vector<float> input_norm_weight, input_norm_bias;          // bottleneck.input.LayerNorm
  std::vector<float> attention_norm_weight, attention_norm_bias;  // bottleneck.attention (shared)
  DenseNorm attention_output;         // 128 -> 128, residual: the input bottleneck
  std::vector<DenseNorm> ffn_output;  // per FFN (the last is the layer's output.dense)
  std::vector<Packed> ffn_intermediate;
  DenseNorm output_bottleneck;  // 128 -> 512, residual: the layer input
};

struct ModelWeights {
  // Embeddings.
  std::vector<float> word_embeddings, position_embeddings, token_type_embeddings;
  DenseNorm embedding;  // embedding_transformation + embeddings.LayerNorm
  std::vector<LayerTensors> layers;
  // Heads, when the checkpoint has them.
  std::optional<DenseNorm> pooler;        // pooler.dense (classifier_activation); no norm
  std::optional<DenseNorm> mlm_transform;  // cls.predictions.transform.{dense, LayerNorm}
  Packed mlm_decoder;  // [vocab, hidden]: rows [word_embeddings[v], cls.predictions.dense[:, v]], bias
  Packed classifier;   // [num_labels, hidden]
  std::vector<std::string> unused;  // checkpoint tensors the engine does not read
};

// Throws std::runtime_error naming the tensor when one is missing or misshapen.
ModelWeights load_weights(const SafeTensors& st, const MobileBertConfig& c, Isa isa);

}  // namespace mbk::engine
