#include "engine/config.h"

#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "engine/json_text.h"

namespace mbk::engine {
namespace {

template <typename T>
void read(const nlohmann::json& j, const char* name, T& field, const std::string& path) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return;
  try {
    field = it->get<T>();
  } catch (const nlohmann::json::exception&) {
    throw std::runtime_error("config '" + path + "': field " + name + " has the wrong type: " +
                             describe(*it));
  }
}

// Integer fields take JSON integers in int64_t's range only: nlohmann converts a float such as 1e300
// to an integer with undefined behavior (and 3.7 to 3 silently); HF writes these fields as integers.
void read(const nlohmann::json& j, const char* name, int64_t& field, const std::string& path) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return;
  if (!it->is_number_integer() || (it->is_number_unsigned() && it->get<uint64_t>() > INT64_MAX))
    throw std::runtime_error("config '" + path + "': field " + name +
                             " has the wrong type: expected an integer (int64), got " + describe(*it));
  field = it->get<int64_t>();
}

void require(bool ok, const std::string& path, const std::string& field,
             const std::string& expected, const std::string& got) {
  if (!ok)
    throw std::runtime_error("config '" + path + "': " + field + ": the C++ engine supports " +
                             expected + ", got " + got);
}

}  // namespace

MobileBertConfig MobileBertConfig::from_json_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("config: cannot open '" + path + "'");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("config '" + path + "': not valid JSON: " + e.what());
  }
  if (!j.is_object())
    throw std::runtime_error("config '" + path + "': expected a JSON object {field: value}, got " + describe(j));
  MobileBertConfig c;
  read(j, "vocab_size", c.vocab_size, path);
  read(j, "hidden_size", c.hidden_size, path);
  read(j, "num_hidden_layers", c.num_hidden_layers, path);
  read(j, "num_attention_heads", c.num_attention_heads, path);
  read(j, "intermediate_size", c.intermediate_size, path);
  read(j, "max_position_embeddings", c.max_position_embeddings, path);
  read(j, "type_vocab_size", c.type_vocab_size, path);
  read(j, "embedding_size", c.embedding_size, path);
  read(j, "intra_bottleneck_size", c.intra_bottleneck_size, path);
  read(j, "num_feedforward_networks", c.num_feedforward_networks, path);
  read(j, "num_labels", c.num_labels, path);
  read(j, "pad_token_id", c.pad_token_id, path);
  read(j, "hidden_act", c.hidden_act, path);
  read(j, "normalization_type", c.normalization_type, path);
  read(j, "layer_norm_eps", c.layer_norm_eps, path);
  read(j, "trigram_input", c.trigram_input, path);
  read(j, "use_bottleneck", c.use_bottleneck, path);
  read(j, "use_bottleneck_attention", c.use_bottleneck_attention, path);
  read(j, "key_query_shared_bottleneck", c.key_query_shared_bottleneck, path);
  read(j, "classifier_activation", c.classifier_activation, path);
  read(j, "architectures", c.architectures, path);
  if (j.contains("quantization_config") && j["quantization_config"].is_object()) {
    const nlohmann::json& q = j["quantization_config"];
    read(q, "quant_method", c.quant_method, path);
    int64_t version = 0;
    read(q, "version", version, path);
    require(c.quant_method == "mbkernels-int8" && version == 1, path, "quantization_config",
            "quant_method \"mbkernels-int8\" version 1 (mbkernels.quantize)",
            "quant_method \"" + c.quant_method + "\" version " + std::to_string(version));
    // 7: weights in [-63, 63], which the packer sends to a narrow int8 kernel where the ISA has one.
    read(q, "weight_bits", c.weight_bits, path);
    require(c.weight_bits == 7 || c.weight_bits == 8, path, "quantization_config.weight_bits", "7 or 8",
            std::to_string(c.weight_bits));
  }
  // HF writes id2label rather than num_labels for classification checkpoints.
  if (j.contains("id2label") && j["id2label"].is_object() && !j.contains("num_labels"))
    c.num_labels = static_cast<int64_t>(j["id2label"].size());

  for (const auto& [name, v] :
       {std::pair<const char*, int64_t>{"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size},
        {"num_hidden_layers", c.num_hidden_layers}, {"num_attention_heads", c.num_attention_heads},
        {"intermediate_size", c.intermediate_size},
        {"max_position_embeddings", c.max_position_embeddings},
        {"type_vocab_size", c.type_vocab_size}, {"embedding_size", c.embedding_size},
        {"intra_bottleneck_size", c.intra_bottleneck_size},
        {"num_feedforward_networks", c.num_feedforward_networks}, {"num_labels", c.num_labels}})
    require(v > 0, path, name, "a positive value", std::to_string(v));
  require(c.hidden_act == "relu" || c.hidden_act == "gelu", path, "hidden_act", "\"relu\" or \"gelu\"",
          '"' + c.hidden_act + '"');
  require(c.normalization_type == "no_norm" || c.normalization_type == "layer_norm", path,
          "normalization_type", "\"no_norm\" or \"layer_norm\"", '"' + c.normalization_type + '"');
  require(c.use_bottleneck, path, "use_bottleneck",
          "true only (MobileBERT's bottleneck layers; a BERT-like layer is not implemented)", "false");
  require(c.intra_bottleneck_size % c.num_attention_heads == 0, path, "num_attention_heads",
          "a divisor of intra_bottleneck_size (" + std::to_string(c.intra_bottleneck_size) + ")",
          std::to_string(c.num_attention_heads));
  require(c.embedding_size <= c.hidden_size, path, "embedding_size",
          "at most hidden_size (" + std::to_string(c.hidden_size) + ")",
          std::to_string(c.embedding_size));
  require(c.pad_token_id >= 0 && c.pad_token_id < c.vocab_size, path, "pad_token_id",
          "an id in [0, vocab_size)", std::to_string(c.pad_token_id));
  return c;
}

std::string MobileBertConfig::attention_mode() const {
  if (use_bottleneck_attention) return "bottleneck";
  if (key_query_shared_bottleneck) return "shared";
  return "full";
}

}  // namespace mbk::engine
