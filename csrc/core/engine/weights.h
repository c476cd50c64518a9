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

struct LayerWeights {
  DenseNorm bottleneck_input;      // 512 -> 128
  DenseNorm bottleneck_attention;  // 512 -> 128, "shared" mode only
  Packed query_key;                // [Q; K] stacked: one GEMM writes Q | K side by side
  Packed value;
  DenseNorm attention_output;         // 128 -> 128, residual: the input bottleneck
  std::vector<DenseNorm> ffn_output;  // per FFN (the last is the layer's output.dense)
  std::vector<Packed> ffn_intermediate;
  DenseNorm output_bottleneck;  // 128 -> 512, residual: the layer input
};

struct ModelWeights {
  // Embeddings.
  std::vector<float> word_embeddings, position_embeddings, token_type_embeddings;
  DenseNorm embedding;  // embedding_transformation + embeddings.LayerNorm
  std::vector<LayerWeights> layers;
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
