#include "engine/model.h"

#include <cmath>
#include <cstring>
#include <stdexcept>

#include "ops/embedding.h"
#include "ops/ffn_stack.h"
#include "ops/layer.h"

namespace mbk::engine {
namespace {

// HF builds embeddings.LayerNorm and the last FFN's output.LayerNorm with nn.LayerNorm's default
// eps (docs/design.md "MobileBERT facts"); every other site uses layer_norm_eps.
constexpr float kDefaultEps = 1e-5f;

int64_t round16(int64_t x) { return (x + 15) / 16 * 16; }

}  // namespace

MobileBert::MobileBert(const std::string& folder, const EngineOptions& options)
    : config_(MobileBertConfig::from_json_file(folder + "/config.json")), options_(options) {
  if (options.max_batch < 1 || options.max_seq < 1 || options.num_threads < 1)
    throw std::invalid_argument("MobileBert: max_batch, max_seq and num_threads must be >= 1, got " +
                                std::to_string(options.max_batch) + ", " +
                                std::to_string(options.max_seq) + ", " +
                                std::to_string(options.num_threads));
  if (options.max_seq > config_.max_position_embeddings)
    throw std::invalid_argument("MobileBert: max_seq must be <= max_position_embeddings (" +
                                std::to_string(config_.max_position_embeddings) + "), got " +
                                std::to_string(options.max_seq));
  const SafeTensors st(folder + "/model.safetensors");
  weights_ = load_weights(st, config_, active_isa());
  const MobileBertConfig& c = config_;
  const gemm::Norm norm = c.normalization_type == "no_norm" ? gemm::Norm::nonorm : gemm::Norm::layernorm;
  const float eps = static_cast<float>(c.layer_norm_eps);
  const std::string mode = c.attention_mode();
  const ops::AttentionMode attention_mode = mode == "shared"       ? ops::AttentionMode::shared
                                            : mode == "bottleneck" ? ops::AttentionMode::bottleneck
                                                                   : ops::AttentionMode::full;
  ffn_ops_.reserve(weights_.layers.size());
  for (const LayerTensors& L : weights_.layers) {
    std::vector<ops::FfnWeights> ffns;
    for (size_t i = 0; i < L.ffn_output.size(); ++i)
      ffns.push_back({L.ffn_intermediate[i].get(), L.ffn_output[i].dense.get(),
                      L.ffn_output[i].norm_weight.data(), L.ffn_output[i].norm_bias.data(),
                      i + 1 == L.ffn_output.size() ? kDefaultEps : eps});
    ffn_ops_.push_back(std::move(ffns));
    ops::LayerWeights w{};
    ops::BottleneckAttentionWeights& a = w.attention;
    a.mode = attention_mode;
    a.over_h = L.over_h.get();
    a.over_bottleneck = L.over_bottleneck.get();
    a.output = L.attention_output.dense.get();
    a.norm = norm;
    a.eps = eps;
    a.input_norm_weight = L.input_norm_weight.data();
    a.input_norm_bias = L.input_norm_bias.data();
    a.attention_norm_weight = L.attention_norm_weight.data();
    a.attention_norm_bias = L.attention_norm_bias.data();
    a.output_norm_weight = L.attention_output.norm_weight.data();
    a.output_norm_bias = L.attention_output.norm_bias.data();
    a.heads = c.num_attention_heads;
    w.ffns = ffn_ops_.back().data();
    w.ffn_count = static_cast<int>(ffn_ops_.back().size());
    w.act = c.hidden_act == "relu" ? gemm::Act::relu : gemm::Act::gelu;
    w.output = L.output_bottleneck.dense.get();
    w.output_norm_weight = L.output_bottleneck.norm_weight.data();
    w.output_norm_bias = L.output_bottleneck.norm_bias.data();
    w.eps = eps;
    layer_ops_.push_back(w);
  }

  const int64_t rows = options.max_batch * options.max_seq, H = c.hidden_size;
  ops::EmbeddingArgs emb;
  emb.batch = options.max_batch;
  emb.seq = options.max_seq;
  emb.embedding_size = c.embedding_size;
  emb.trigram = c.trigram_input;
  // num_labels only sizes the classifier's logits: without a classifier it is a config value no
  // tensor bounds (a malformed 1e18 would be an arena of 1e18 floats).
  const int64_t logits = has_mlm_head()     ? rows * c.vocab_size
                         : has_classifier() ? options.max_batch * c.num_labels
                                            : 0;
  const int64_t sizes[] = {rows * H, static_cast<int64_t>(ops::embedding_workspace_floats(emb)),
                           static_cast<int64_t>(ops::encoder_workspace_floats(
                               layer_ops_.data(), static_cast<int>(layer_ops_.size()),
                               options.max_batch, options.max_seq, options.num_threads)),
                           rows * H, logits, options.max_batch * H};
  float** views[] = {&h0_, &embed_ws_, &layer_ws_, &head_, &logits_, &pooled_};
  int64_t total = 0;
  for (int64_t s : sizes) total += round16(s) + 16;
  arena_.assign(static_cast<size_t>(total), 0.0f);
  // 64-byte aligned views (the vector's own alignment is 16).
  float* p = arena_.data();
  p += (16 - (reinterpret_cast<uintptr_t>(p) / sizeof(float)) % 16) % 16;
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); ++i) {
    *views[i] = p;
    p += round16(sizes[i]);
  }
}

void MobileBert::check(const Batch& b) const {
  if (b.batch < 1 || b.batch > options_.max_batch || b.seq < 1 || b.seq > options_.max_seq)
    throw std::invalid_argument("MobileBert: batch x seq must be within [1, " +
                                std::to_string(options_.max_batch) + "] x [1, " +
                                std::to_string(options_.max_seq) +
                                "] (the arena's size), got " + std::to_string(b.batch) + " x " +
                                std::to_string(b.seq));
  if (b.input_ids == nullptr) throw std::invalid_argument("MobileBert: input_ids must not be null");
}

const float* MobileBert::encode(const Batch& b) {
  check(b);
  const MobileBertConfig& c = config_;
  ops::EmbeddingArgs e;
  e.batch = b.batch;
  e.seq = b.seq;
  e.input_ids = b.input_ids;
  e.token_type_ids = b.token_type_ids;
  e.word_embeddings = weights_.word_embeddings.data();
  e.vocab = c.vocab_size;
  e.embedding_size = c.embedding_size;
  e.trigram = c.trigram_input;
  e.transformation = weights_.embedding.dense.get();
  e.position_embeddings = weights_.position_embeddings.data();
  e.max_positions = c.max_position_embeddings;
  e.token_type_embeddings = weights_.token_type_embeddings.data();
  e.type_vocab = c.type_vocab_size;
  e.hidden = c.hidden_size;
  e.norm = c.normalization_type == "no_norm" ? gemm::Norm::nonorm : gemm::Norm::layernorm;
  e.norm_weight = weights_.embedding.norm_weight.data();
  e.norm_bias = weights_.embedding.norm_bias.data();
  e.eps = kDefaultEps;
  e.out = h0_;
  e.ld_out = c.hidden_size;
  ops::embedding_forward(e, options_.num_threads, embed_ws_);
  ops::encoder_forward(layer_ops_.data(), static_cast<int>(layer_ops_.size()), h0_, b.batch, b.seq,
                       b.attention_mask, options_.num_threads, layer_ws_);
  return h0_;
}

const float* MobileBert::mlm_logits(const Batch& b) {
  if (!has_mlm_head())
    throw std::runtime_error("MobileBert::mlm_logits: the checkpoint has no MLM head "
                             "(cls.predictions.*; save a MobileBertForMaskedLM)");
  const float* h = encode(b);
  const MobileBertConfig& c = config_;
  const int64_t rows = b.batch * b.seq, H = c.hidden_size;
  const int nt = options_.num_threads;
  // t = LayerNorm(act(h Wᵀ + bias)) (a real LayerNorm in every variant), then t [Eᵀ; extra] + bias.
  gemm::Epilogue ep;
  ep.act = c.hidden_act == "relu" ? gemm::Act::relu : gemm::Act::gelu;
  ep.norm = gemm::Norm::layernorm;
  ep.norm_weight = weights_.mlm_transform->norm_weight.data();
  ep.norm_bias = weights_.mlm_transform->norm_bias.data();
  ep.eps = static_cast<float>(c.layer_norm_eps);
  gemm::gemm(h, H, rows, *weights_.mlm_transform->dense, head_, H, ep, nt);
  gemm::gemm(head_, H, rows, *weights_.mlm_decoder, logits_, c.vocab_size, gemm::Epilogue{}, nt);
  return logits_;
}

const float* MobileBert::sequence_logits(const Batch& b) {
  if (!has_classifier())
    throw std::runtime_error("MobileBert::sequence_logits: the checkpoint has no classifier "
                             "(classifier.*; save a MobileBertForSequenceClassification)");
  const float* h = encode(b);
  const MobileBertConfig& c = config_;
  const int64_t H = c.hidden_size;
  const int nt = options_.num_threads;
  for (int64_t i = 0; i < b.batch; ++i)
    std::memcpy(pooled_ + i * H, h + i * b.seq * H, static_cast<size_t>(H) * sizeof(float));
  const float* pooled = pooled_;
  if (weights_.pooler) {  // classifier_activation: tanh(dense(h[:, 0]))
    gemm::gemm(pooled_, H, b.batch, *weights_.pooler->dense, head_, H, gemm::Epilogue{}, nt);
    for (int64_t i = 0; i < b.batch * H; ++i) head_[i] = std::tanh(head_[i]);
    pooled = head_;
  }
  gemm::gemm(pooled, H, b.batch, *weights_.classifier, logits_, c.num_labels, gemm::Epilogue{}, nt);
  return logits_;
}

}  // namespace mbk::engine
