#include "engine/weights.h"

#include <cmath>
#include <set>
#include <stdexcept>

namespace mbk::engine {
namespace {

class Reader {
 public:
  Reader(const SafeTensors& st, const MobileBertConfig& c, Isa isa)
      : st_(st),
        isa_(isa),
        weight_max_(gemm::int8_weight_max(static_cast<int>(c.weight_bits))),
        weight_bits_(c.weight_bits) {
    // Task models (ForMaskedLM, ForSequenceClassification, ...) prefix the backbone.
    prefix_ = st.contains("mobilebert.embeddings.word_embeddings.weight") ? "mobilebert." : "";
  }
  bool has(const std::string& name, bool backbone = true) const {
    return st_.contains((backbone ? prefix_ : "") + name);
  }
  std::vector<float> get(const std::string& name, std::vector<int64_t> shape,
                         bool backbone = true) {
    const std::string full = (backbone ? prefix_ : "") + name;
    used_.insert(full);
    return st_.get(full, shape);
  }
  // An int8 Linear's weight_scale or input_smooth: finite and > 0 (what mbkernels.quantize writes
  // and its Python loader checks), named here rather than by the packer, which knows no tensor names.
  std::vector<float> get_positive(const std::string& name, std::vector<int64_t> shape, bool backbone) {
    std::vector<float> v = get(name, shape, backbone);
    for (size_t i = 0; i < v.size(); ++i)
      if (!(std::isfinite(v[i]) && v[i] > 0.0f))
        throw std::runtime_error("weights: tensor '" + (backbone ? prefix_ : "") + name +
                                 "': expected finite values > 0, got " + std::to_string(v[i]) + " at [" +
                                 std::to_string(i) + "]");
    return v;
  }
  // An int8 weight, its values within weight_bits' range (-128 and, for 7 bits, beyond 63 are
  // refused as the Python loader refuses them).
  std::vector<int8_t> get_int8(const std::string& name, std::vector<int64_t> shape,
                               bool backbone = true) {
    const std::string full = (backbone ? prefix_ : "") + name;
    used_.insert(full);
    std::vector<int8_t> w = st_.get_int8(full, shape);
    for (size_t i = 0; i < w.size(); ++i)
      if (w[i] < -weight_max_ || w[i] > weight_max_)
        throw std::runtime_error("weights: tensor '" + full + "': expected int8 values in [-" +
                                 std::to_string(weight_max_) + ", " + std::to_string(weight_max_) +
                                 "] (weight_bits " + std::to_string(weight_bits_) + "), got " +
                                 std::to_string(w[i]) + " at [" + std::to_string(i / shape.back()) + ", " +
                                 std::to_string(i % shape.back()) + "]");
    return w;
  }
  Packed linear(const std::string& name, int64_t out, int64_t in, bool backbone = true) {
    return stacked({name}, out, in, backbone);
  }
  // <name>.dense and <name>.LayerNorm.
  DenseNorm dense_norm(const std::string& name, int64_t out, int64_t in, bool backbone = true) {
    DenseNorm d;
    d.dense = linear(name + ".dense", out, in, backbone);
    d.norm_weight = get(name + ".LayerNorm.weight", {out}, backbone);
    d.norm_bias = get(name + ".LayerNorm.bias", {out}, backbone);
    return d;
  }
  // Linears [out, in] with the same input stacked into one [count·out, in] GEMM, in order. int8
  // Linears (an I8 weight with its weight_scale, and input_smooth where the checkpoint has one)
  // go into the int8 GEMM; a stack is all int8 with one smooth, or all float.
  Packed stacked(const std::vector<std::string>& names, int64_t out, int64_t in,
                 bool backbone = true) {
    const bool int8 = st_.dtype((backbone ? prefix_ : "") + names[0] + ".weight") == "I8";
    std::vector<float> w, bias, scale, smooth;
    std::vector<int8_t> wq;
    for (const std::string& n : names) {
      const std::vector<float> bi = get(n + ".bias", {out}, backbone);
      bias.insert(bias.end(), bi.begin(), bi.end());
      if (!int8) {
        const std::vector<float> wi = get(n + ".weight", {out, in}, backbone);
        w.insert(w.end(), wi.begin(), wi.end());
        continue;
      }
      const std::vector<int8_t> qi = get_int8(n + ".weight", {out, in}, backbone);
      const std::vector<float> si = get_positive(n + ".weight_scale", {out}, backbone);
      wq.insert(wq.end(), qi.begin(), qi.end());
      scale.insert(scale.end(), si.begin(), si.end());
      std::vector<float> mi;
      if (has(n + ".input_smooth", backbone)) mi = get_positive(n + ".input_smooth", {in}, backbone);
      if (n != names[0] && mi != smooth)
        throw std::runtime_error("weights: '" + n + "' is stacked with '" + names[0] +
                                 "' (they read one input) but has a different input_smooth");
      smooth = mi;
    }
    const int64_t n = out * static_cast<int64_t>(names.size());
    if (!int8)
      return std::make_unique<gemm::PackedWeights>(w.data(), in, 1, bias.data(), n, in, isa_);
    const float* m = smooth.empty() ? nullptr : smooth.data();
    const gemm::Int8Weight q{wq.data(), in, 1, scale.data(), m};
    try {
      return std::make_unique<gemm::PackedWeights>(q, bias.data(), n, in, isa_);
    } catch (const std::invalid_argument& e) {  // e.g. k beyond the int8 GEMM's: name the tensors
      std::string stack;
      for (const std::string& name : names)
        stack += (stack.empty() ? "'" : ", '") + (backbone ? prefix_ : "") + name + ".weight'";
      throw std::runtime_error("weights: " + stack + " (" + std::to_string(out) + " rows each, stacked): " +
                               e.what());
    }
  }
  Isa isa() const { return isa_; }
  std::vector<std::string> unused() const {
    std::vector<std::string> out;
    for (const std::string& n : st_.names())
      if (!used_.count(n)) out.push_back(n);
    return out;
  }

 private:
  const SafeTensors& st_;
  Isa isa_;
  int weight_max_;  // int8 weights lie in [-weight_max_, weight_max_] (quantization_config.weight_bits)
  int64_t weight_bits_;
  std::string prefix_;
  std::set<std::string> used_;
};

}  // namespace

ModelWeights load_weights(const SafeTensors& st, const MobileBertConfig& c, Isa isa) {
  Reader r(st, c, isa);
  ModelWeights m;
  const int64_t H = c.hidden_size, W = c.intra_bottleneck_size, E = c.embedding_size;
  const int64_t I = c.intermediate_size;
  m.word_embeddings = r.get("embeddings.word_embeddings.weight", {c.vocab_size, E});
  m.position_embeddings =
      r.get("embeddings.position_embeddings.weight", {c.max_position_embeddings, H});
  m.token_type_embeddings = r.get("embeddings.token_type_embeddings.weight", {c.type_vocab_size, H});
  m.embedding.dense = r.linear("embeddings.embedding_transformation", H, c.trigram_input ? 3 * E : E);
  m.embedding.norm_weight = r.get("embeddings.LayerNorm.weight", {H});
  m.embedding.norm_bias = r.get("embeddings.LayerNorm.bias", {H});

  const std::string mode = c.attention_mode();
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "encoder.layer." + std::to_string(l) + ".";
    LayerTensors L;
    const std::string input = p + "bottleneck.input", shared = p + "bottleneck.attention";
    const std::string q = p + "attention.self.query", k = p + "attention.self.key";
    const std::string v = p + "attention.self.value";
    if (mode == "shared") {
      L.over_h = r.stacked({input + ".dense", shared + ".dense", v}, W, H);
      L.over_bottleneck = r.stacked({q, k}, W, W);
      L.attention_norm_weight = r.get(shared + ".LayerNorm.weight", {W});
      L.attention_norm_bias = r.get(shared + ".LayerNorm.bias", {W});
    } else if (mode == "bottleneck") {
      L.over_h = r.stacked({input + ".dense"}, W, H);
      L.over_bottleneck = r.stacked({q, k, v}, W, W);
    } else {  // full
      L.over_h = r.stacked({input + ".dense", q, k, v}, W, H);
    }
    L.input_norm_weight = r.get(input + ".LayerNorm.weight", {W});
    L.input_norm_bias = r.get(input + ".LayerNorm.bias", {W});
    L.attention_output = r.dense_norm(p + "attention.output", W, W);
    for (int64_t f = 0; f + 1 < c.num_feedforward_networks; ++f) {
      const std::string ffn = p + "ffn." + std::to_string(f) + ".";
      L.ffn_intermediate.push_back(r.linear(ffn + "intermediate.dense", I, W));
      L.ffn_output.push_back(r.dense_norm(ffn + "output", W, I));
    }
    L.ffn_intermediate.push_back(r.linear(p + "intermediate.dense", I, W));
    DenseNorm last;
    last.dense = r.linear(p + "output.dense", W, I);
    last.norm_weight = r.get(p + "output.LayerNorm.weight", {W});
    last.norm_bias = r.get(p + "output.LayerNorm.bias", {W});
    L.ffn_output.push_back(std::move(last));
    L.output_bottleneck = r.dense_norm(p + "output.bottleneck", H, W);
    m.layers.push_back(std::move(L));
  }

  // The pooler's dense exists only with classifier_activation; a classifier then needs it.
  if (c.classifier_activation && (r.has("pooler.dense.weight") || r.has("classifier.weight", false))) {
    DenseNorm pooler;
    pooler.dense = r.linear("pooler.dense", H, H);
    m.pooler = std::move(pooler);
  }
  if (r.has("cls.predictions.transform.dense.weight", false)) {
    m.mlm_transform = r.dense_norm("cls.predictions.transform", H, H, false);
    // logits = t [word_embeddingsᵀ; cls.predictions.dense.weight] + bias, as one [vocab, H] Linear.
    const std::vector<float> extra = r.get("cls.predictions.dense.weight", {H - E, c.vocab_size}, false);
    const std::vector<float> bias = r.get("cls.predictions.bias", {c.vocab_size}, false);
    std::vector<float> dec(static_cast<size_t>(c.vocab_size * H));
    for (int64_t v = 0; v < c.vocab_size; ++v) {
      for (int64_t e = 0; e < E; ++e) dec[v * H + e] = m.word_embeddings[v * E + e];
      for (int64_t e = 0; e < H - E; ++e) dec[v * H + E + e] = extra[e * c.vocab_size + v];
    }
    m.mlm_decoder = std::make_unique<gemm::PackedWeights>(dec.data(), H, 1, bias.data(),
                                                          c.vocab_size, H, isa);
  }
  if (r.has("classifier.weight", false))
    m.classifier = r.linear("classifier", c.num_labels, H, false);
  m.unused = r.unused();
  return m;
}

}  // namespace mbk::engine
