#include "engine/model.h"

#include <cmath>
#include <cstring>
#include <stdexcept>

#include "ops/attention.h"
#include "ops/embedding.h"
#include "ops/ffn_stack.h"
#include "ops/linear_norm.h"

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
  for (const LayerWeights& L : weights_.layers) {
    std::vector<ops::FfnWeights> ffns;
    for (size_t i = 0; i < L.ffn_output.size(); ++i)
      ffns.push_back({L.ffn_intermediate[i].get(), L.ffn_output[i].dense.get(),
                      L.ffn_output[i].norm_weight.data(), L.ffn_output[i].norm_bias.data(),
                      i + 1 == L.ffn_output.size() ? kDefaultEps
                                                   : static_cast<float>(config_.layer_norm_eps)});
    ffn_ops_.push_back(std::move(ffns));
  }

  const MobileBertConfig& c = config_;
  const int64_t rows = options.max_batch * options.max_seq, H = c.hidden_size;
  const int64_t W = c.intra_bottleneck_size;
  ops::AttentionArgs shape;
  shape.batch = options.max_batch;
  shape.heads = c.num_attention_heads;
  shape.seq_q = shape.seq_k = options.max_seq;
  shape.head_dim = c.head_size();
  ops::EmbeddingArgs emb;
  emb.batch = options.max_batch;
  emb.seq = options.max_seq;
  emb.embedding_size = c.embedding_size;
  emb.trigram = c.trigram_input;
  const int64_t logits = has_mlm_head() ? rows * c.vocab_size : options.max_batch * c.num_labels;
  const int64_t sizes[] = {rows * H, rows * H, rows * W, rows * W, rows * 2 * W, rows * W,
                           rows * W, rows * W, rows * W,
                           static_cast<int64_t>(ops::embedding_workspace_floats(emb)),
                           static_cast<int64_t>(ops::attention_workspace_floats(shape, options.num_threads)),
                           rows * H, logits, options.max_batch * H};
  float** views[] = {&h0_, &h1_, &bneck_, &shared_, &qk_, &v_, &ctx_, &attn_, &ffn_,
                     &embed_ws_, &attn_ws_, &head_, &logits_, &pooled_};
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

void MobileBert::layer(const LayerWeights& L, const Batch& b, const float* h, float* out) {
  const MobileBertConfig& c = config_;
  const int nt = options_.num_threads;
  const int64_t rows = b.batch * b.seq, H = c.hidden_size, W = c.intra_bottleneck_size;
  const gemm::Norm norm = c.normalization_type == "no_norm" ? gemm::Norm::nonorm : gemm::Norm::layernorm;
  const float eps = static_cast<float>(c.layer_norm_eps);
  const auto dense_norm = [&](const DenseNorm& d, const float* x, int64_t ldx, const float* res,
                              int64_t ldr, float* y, int64_t ldy) {
    ops::linear_norm_forward(x, ldx, rows, *d.dense, res, ldr, norm, d.norm_weight.data(),
                             d.norm_bias.data(), eps, y, ldy, nt);
  };
  // Bottlenecks: b = N(h Wi) (the attention's residual), s = N(h Wa) in "shared" mode.
  dense_norm(L.bottleneck_input, h, H, nullptr, 0, bneck_, W);
  const std::string mode = c.attention_mode();
  const float* qk_in = h;
  const float* v_in = h;
  int64_t ld_qk_in = H, ld_v_in = H;
  if (mode == "shared") {
    dense_norm(L.bottleneck_attention, h, H, nullptr, 0, shared_, W);
    qk_in = shared_;
    ld_qk_in = W;
  } else if (mode == "bottleneck") {
    qk_in = v_in = bneck_;
    ld_qk_in = ld_v_in = W;
  }
  // Q | K in one GEMM (row stride 2W), V beside.
  gemm::gemm(qk_in, ld_qk_in, rows, *L.query_key, qk_, 2 * W, gemm::Epilogue{}, nt);
  gemm::gemm(v_in, ld_v_in, rows, *L.value, v_, W, gemm::Epilogue{}, nt);

  ops::AttentionArgs a;
  a.batch = b.batch;
  a.heads = c.num_attention_heads;
  a.seq_q = a.seq_k = b.seq;
  a.head_dim = c.head_size();
  a.q = qk_;
  a.q_strides = {b.seq * 2 * W, a.head_dim, 2 * W};
  a.k = qk_ + W;
  a.k_strides = a.q_strides;
  a.v = v_;
  a.v_strides = {b.seq * W, a.head_dim, W};
  a.key_mask = b.attention_mask;
  a.mask_batch_stride = b.seq;
  a.ctx = ctx_;
  a.ctx_strides = a.v_strides;
  ops::attention_forward(a, nt, attn_ws_);
  dense_norm(L.attention_output, ctx_, W, bneck_, W, attn_, W);

  const std::vector<ops::FfnWeights>& ffns = ffn_ops_[&L - weights_.layers.data()];
  ops::ffn_stack_forward(attn_, W, rows, ffns.data(), static_cast<int>(ffns.size()),
                         c.hidden_act == "relu" ? gemm::Act::relu : gemm::Act::gelu, norm, ffn_, W,
                         nt);
  dense_norm(L.output_bottleneck, ffn_, W, h, H, out, H);
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
  float* h = h0_;
  float* next = h1_;
  for (const LayerWeights& L : weights_.layers) {
    layer(L, b, h, next);
    std::swap(h, next);
  }
  return h;
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
