// mbkernels_cpu::bottleneck_attention_forward: checks the mode's weights, stacks and packs them
// (through the packed-weight cache: [Wi; Wa; Wv] is one cached packing) and runs
// csrc/core/ops/bottleneck_attention.h; and mbkernels_cpu::attention_forward on
// csrc/core/ops/attention.h. fp32, with training's dropout (the counter-based masks of dropout.h,
// the reference's streams); their backwards are in attention_backward.cpp.
#include "bottleneck_attention.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "args.h"
#include "ops/attention.h"
#include "weight_cache.h"

namespace mbk::torch_cpu {
namespace {

constexpr const char* kOp = "bottleneck_attention_forward";

ops::AttentionMode parse_mode(c10::string_view mode, const char* op) {
  if (mode == "shared") return ops::AttentionMode::shared;
  if (mode == "bottleneck") return ops::AttentionMode::bottleneck;
  if (mode == "full") return ops::AttentionMode::full;
  TORCH_CHECK(mode == "none", "mbkernels_cpu::", op,
              ": mode must be 'shared', 'bottleneck', 'full' or 'none', got '", std::string(mode),
              "'");
  return ops::AttentionMode::none;
}

const at::Tensor& required(const std::optional<at::Tensor>& t, const char* name,
                           c10::string_view mode, const char* op) {
  TORCH_CHECK(t.has_value(), "mbkernels_cpu::", op, ": ", name, " is required in mode '",
              std::string(mode), "', got None");
  return *t;
}

}  // namespace

PackedBottleneckAttention pack_bottleneck_attention(const at::Tensor& h,
                                                    const BottleneckAttentionTensors& t,
                                                    int64_t num_heads, c10::string_view mode,
                                                    c10::string_view norm, double eps,
                                                    const char* op) {
  check_f32(h, op, "h");
  TORCH_CHECK(h.dim() == 3, "mbkernels_cpu::", op, ": h must be [batch, seq, hidden], got ",
              h.sizes());
  const int64_t hidden = h.size(2);
  PackedBottleneckAttention p;
  p.weights.mode = parse_mode(mode, op);
  p.weights.norm = parse_norm(norm, op);
  p.weights.eps = static_cast<float>(eps);
  TORCH_CHECK(num_heads >= 1, "mbkernels_cpu::", op, ": num_heads must be >= 1, got ", num_heads);
  p.weights.heads = num_heads;
  const at::Tensor& wo = required(t.output_weight, "output_weight", mode, op);
  check_f32(wo, op, "output_weight");
  TORCH_CHECK(wo.dim() == 2 && wo.size(0) == wo.size(1), "mbkernels_cpu::", op,
              ": output_weight must be square [width, width], got ", wo.sizes());
  const int64_t width = wo.size(0);
  TORCH_CHECK(width % num_heads == 0, "mbkernels_cpu::", op, ": the width ", width,
              " must be a multiple of num_heads (", num_heads, ")");
  const auto linear = [&](const std::optional<at::Tensor>& w, const std::optional<at::Tensor>& b,
                          const char* wname, const char* bname, int64_t k) -> LinearRef {
    const at::Tensor& wt = required(w, wname, mode, op);
    check_f32(wt, op, wname);
    TORCH_CHECK(wt.dim() == 2 && wt.size(0) == width && wt.size(1) == k, "mbkernels_cpu::", op,
                ": ", wname, " must have shape [", width, ", ", k, "], got ", wt.sizes());
    if (b.has_value()) check_vector(*b, width, op, bname);
    return {&wt, b.has_value() ? &*b : nullptr};
  };
  const auto norm_param = [&](const std::optional<at::Tensor>& v, const char* name) {
    const at::Tensor& vt = required(v, name, mode, op);
    check_vector(vt, width, op, name);
    p.keep.push_back(vt.contiguous());
    return p.keep.back().const_data_ptr<float>();
  };
  std::vector<LinearRef> over_h, over_b;
  using M = ops::AttentionMode;
  const M m = p.weights.mode;
  if (m == M::none)
    TORCH_CHECK(width == hidden, "mbkernels_cpu::", op, ": mode 'none' needs output_weight [",
                hidden, ", ", hidden, "] (the hidden width), got ", wo.sizes());
  if (m != M::none)
    over_h.push_back(linear(t.input_weight, t.input_bias, "input_weight", "input_bias", hidden));
  if (m == M::shared)
    over_h.push_back(linear(t.attention_weight, t.attention_bias, "attention_weight",
                            "attention_bias", hidden));
  const int64_t qk_in = m == M::shared || m == M::bottleneck ? width : hidden;
  const int64_t v_in = m == M::bottleneck ? width : hidden;
  std::vector<LinearRef>& qk_list = m == M::shared || m == M::bottleneck ? over_b : over_h;
  qk_list.push_back(linear(t.query_weight, t.query_bias, "query_weight", "query_bias", qk_in));
  qk_list.push_back(linear(t.key_weight, t.key_bias, "key_weight", "key_bias", qk_in));
  (m == M::bottleneck ? over_b : over_h)
      .push_back(linear(t.value_weight, t.value_bias, "value_weight", "value_bias", v_in));
  p.over_h = packed_weights(over_h);
  if (!over_b.empty()) p.over_bottleneck = packed_weights(over_b);
  p.output = packed_weights(wo, t.output_bias.has_value() ? &*t.output_bias : nullptr);
  if (t.output_bias.has_value()) check_vector(*t.output_bias, width, op, "output_bias");
  p.weights.over_h = p.over_h.get();
  p.weights.over_bottleneck = p.over_bottleneck.get();
  p.weights.output = p.output.get();
  if (m != M::none) {
    p.weights.input_norm_weight = norm_param(t.input_norm_weight, "input_norm_weight");
    p.weights.input_norm_bias = norm_param(t.input_norm_bias, "input_norm_bias");
  }
  if (m == M::shared) {
    p.weights.attention_norm_weight = norm_param(t.attention_norm_weight, "attention_norm_weight");
    p.weights.attention_norm_bias = norm_param(t.attention_norm_bias, "attention_norm_bias");
  }
  p.weights.output_norm_weight = norm_param(t.output_norm_weight, "output_norm_weight");
  p.weights.output_norm_bias = norm_param(t.output_norm_bias, "output_norm_bias");
  p.width = width;
  return p;
}

at::Tensor key_mask_bytes(const std::optional<at::Tensor>& key_mask, int64_t batch, int64_t seq,
                          const char* op) {
  if (!key_mask.has_value()) return at::Tensor();
  const at::Tensor& m = *key_mask;
  TORCH_CHECK(m.device().is_cpu(), "mbkernels_cpu::", op, ": key_mask must be a CPU tensor, got ",
              m.device());
  TORCH_CHECK(m.dim() == 2 && m.size(0) == batch && m.size(1) == seq, "mbkernels_cpu::", op,
              ": key_mask must have shape [", batch, ", ", seq, "], got ", m.sizes());
  TORCH_CHECK(!m.is_floating_point() && !m.is_complex(), "mbkernels_cpu::", op,
              ": key_mask must be bool or integer (1 = attend), got ", m.scalar_type());
  return m.scalar_type() == at::kBool || m.scalar_type() == at::kByte ? m.to(at::kByte).contiguous()
                                                                       : m.ne(0).to(at::kByte);
}

DropoutMask dropout_of(double p, const std::optional<at::Tensor>& seed, uint32_t stream,
                       const char* op) {
  TORCH_CHECK(p >= 0.0 && p < 1.0, "mbkernels_cpu::", op, ": dropout probability must be in [0, 1), got ", p);
  if (p == 0.0) return {};
  TORCH_CHECK(seed.has_value() && seed->numel() == 1 && !seed->is_floating_point(),
              "mbkernels_cpu::", op, ": dropout needs a seed (a one-element integer tensor), got ",
              seed.has_value() ? seed->toString() : std::string("None"));
  return dropout_mask(p, seed->item<int64_t>(), stream);
}

namespace {

std::tuple<at::Tensor, at::Tensor> bottleneck_attention_forward(
    const at::Tensor& h, const std::optional<at::Tensor>& key_mask,
    const std::optional<at::Tensor>& input_weight, const std::optional<at::Tensor>& input_bias,
    const std::optional<at::Tensor>& input_norm_weight,
    const std::optional<at::Tensor>& input_norm_bias,
    const std::optional<at::Tensor>& attention_weight,
    const std::optional<at::Tensor>& attention_bias,
    const std::optional<at::Tensor>& attention_norm_weight,
    const std::optional<at::Tensor>& attention_norm_bias,
    const std::optional<at::Tensor>& query_weight, const std::optional<at::Tensor>& query_bias,
    const std::optional<at::Tensor>& key_weight, const std::optional<at::Tensor>& key_bias,
    const std::optional<at::Tensor>& value_weight, const std::optional<at::Tensor>& value_bias,
    const std::optional<at::Tensor>& output_weight, const std::optional<at::Tensor>& output_bias,
    const std::optional<at::Tensor>& output_norm_weight,
    const std::optional<at::Tensor>& output_norm_bias, int64_t num_heads, c10::string_view mode,
    c10::string_view norm, double eps, double attn_dropout_p, double hidden_dropout_p,
    const std::optional<at::Tensor>& seed, bool return_scores) {
  const BottleneckAttentionTensors t{
      input_weight,     input_bias,      input_norm_weight,     input_norm_bias,
      attention_weight, attention_bias,  attention_norm_weight, attention_norm_bias,
      query_weight,     query_bias,      key_weight,            key_bias,
      value_weight,     value_bias,      output_weight,         output_bias,
      output_norm_weight, output_norm_bias};
  const PackedBottleneckAttention p =
      pack_bottleneck_attention(h, t, num_heads, mode, norm, eps, kOp);
  const at::Tensor mask = key_mask_bytes(key_mask, h.size(0), h.size(1), kOp);
  const ops::BottleneckAttentionDropout dropout{dropout_of(attn_dropout_p, seed, kAttnStream, kOp),
                                                dropout_of(hidden_dropout_p, seed, kHiddenStream, kOp)};
  const int64_t batch = h.size(0), seq = h.size(1);
  at::Tensor out = at::empty({batch, seq, p.width}, h.options());
  at::Tensor scores = return_scores ? at::empty({batch, num_heads, seq, seq}, h.options())
                                    : at::empty({0}, h.options());
  const auto [hv, ldh] = as_rows(h, batch * seq, h.size(2));
  ops::bottleneck_attention_forward(p.weights, hv.const_data_ptr<float>(), ldh, batch, seq,
                                    mask.defined() ? mask.const_data_ptr<uint8_t>() : nullptr,
                                    out.mutable_data_ptr<float>(),
                                    return_scores ? scores.mutable_data_ptr<float>() : nullptr,
                                    at::get_num_threads(), nullptr, dropout);
  return {out, scores};
}

// softmax(QKᵀ/√D + mask) V on [B, H, S, D] with attention dropout: any strides with a
// contiguous head dimension are used in place.
std::tuple<at::Tensor, at::Tensor> attention_forward(const at::Tensor& q, const at::Tensor& k,
                                                     const at::Tensor& v,
                                                     const std::optional<at::Tensor>& key_mask,
                                                     double dropout_p,
                                                     const std::optional<at::Tensor>& seed,
                                                     bool return_scores) {
  constexpr const char* op = "attention_forward";
  AttentionOperands o = attention_operands(q, k, v, key_mask, dropout_p, seed, op);
  at::Tensor ctx = at::empty(q.sizes(), q.options());
  at::Tensor scores = return_scores ? at::empty({q.size(0), q.size(1), q.size(2), k.size(2)}, q.options())
                                    : at::empty({0}, q.options());
  o.args.ctx = ctx.mutable_data_ptr<float>();
  o.args.ctx_strides = head_strides(ctx);
  o.args.scores = return_scores ? scores.mutable_data_ptr<float>() : nullptr;
  ops::attention_forward(o.args, at::get_num_threads());
  return {ctx, scores};
}

}  // namespace

ops::HeadStrides head_strides(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2)};
}

AttentionOperands attention_operands(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     const std::optional<at::Tensor>& key_mask, double dropout_p,
                                     const std::optional<at::Tensor>& seed, const char* op) {
  const std::pair<const at::Tensor*, const char*> args[] = {{&q, "q"}, {&k, "k"}, {&v, "v"}};
  for (const auto& [t, name] : args) {
    check_f32(*t, op, name);
    TORCH_CHECK(t->dim() == 4, "mbkernels_cpu::", op, ": ", name,
                " must be [batch, heads, seq, head_dim], got ", t->sizes());
  }
  const int64_t batch = q.size(0), heads = q.size(1), sq = q.size(2), d = q.size(3);
  const int64_t sk = k.size(2);
  TORCH_CHECK(k.size(0) == batch && k.size(1) == heads && k.size(3) == d, "mbkernels_cpu::", op,
              ": k must have shape [", batch, ", ", heads, ", seq_k, ", d, "], got ", k.sizes());
  TORCH_CHECK(v.size(0) == batch && v.size(1) == heads && v.size(2) == sk && v.size(3) == d,
              "mbkernels_cpu::", op, ": v must have shape [", batch, ", ", heads, ", ", sk, ", ",
              d, "], got ", v.sizes());
  AttentionOperands o;
  o.mask = key_mask_bytes(key_mask, batch, sk, op);
  o.q = unit_last(q);
  o.k = unit_last(k);
  o.v = unit_last(v);
  ops::AttentionArgs& a = o.args;
  a.batch = batch;
  a.heads = heads;
  a.seq_q = sq;
  a.seq_k = sk;
  a.head_dim = d;
  a.q = o.q.const_data_ptr<float>();
  a.q_strides = head_strides(o.q);
  a.k = o.k.const_data_ptr<float>();
  a.k_strides = head_strides(o.k);
  a.v = o.v.const_data_ptr<float>();
  a.v_strides = head_strides(o.v);
  a.key_mask = o.mask.defined() ? o.mask.const_data_ptr<uint8_t>() : nullptr;
  a.mask_batch_stride = sk;
  a.dropout = dropout_of(dropout_p, seed, kAttnStream, op);
  return o;
}

at::Tensor unit_last(const at::Tensor& t) {
  return t.size(-1) <= 1 || t.stride(-1) == 1 ? t : t.contiguous();
}

}  // namespace mbk::torch_cpu

TORCH_LIBRARY_FRAGMENT(mbkernels_cpu, m) {
  m.def(
      "bottleneck_attention_forward(Tensor h, Tensor? key_mask, Tensor? input_weight, "
      "Tensor? input_bias, Tensor? input_norm_weight, Tensor? input_norm_bias, "
      "Tensor? attention_weight, Tensor? attention_bias, Tensor? attention_norm_weight, "
      "Tensor? attention_norm_bias, Tensor? query_weight, Tensor? query_bias, Tensor? key_weight, "
      "Tensor? key_bias, Tensor? value_weight, Tensor? value_bias, Tensor? output_weight, "
      "Tensor? output_bias, Tensor? output_norm_weight, Tensor? output_norm_bias, int num_heads, "
      "str mode, str norm, float eps, float attn_dropout_p, float hidden_dropout_p, Tensor? seed, "
      "bool return_scores) -> (Tensor, Tensor)");
  m.def(
      "attention_forward(Tensor q, Tensor k, Tensor v, Tensor? key_mask, float dropout_p, "
      "Tensor? seed, bool return_scores) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mbkernels_cpu, CPU, m) {
  m.impl("bottleneck_attention_forward", &mbk::torch_cpu::bottleneck_attention_forward);
  m.impl("attention_forward", &mbk::torch_cpu::attention_forward);
}
