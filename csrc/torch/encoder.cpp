// mbkernels_cpu::encoder_forward: a stack of MobileBERT layers (bottleneck_attention → ffn_stack →
// linear_norm with residual h) in one call, for inference: the per-op dispatch of 3 ops x 24
// layers (~25 us each through Python) becomes one. Each layer runs the same csrc/core kernels as
// the per-op path, with the same packed (cached) weights; intermediates live in buffers allocated
// once per call. fp32, no dropout, no scores (the per-op path serves those).
//
// weights: per layer, in order, the 18 bottleneck_attention weights (schema order), then per FFN
// [W1, b1, W2, b2, norm_weight, norm_bias], then the output bottleneck [W, b, norm_weight,
// norm_bias]; an empty tensor stands for an absent one (a mode's unused projection, no bottleneck).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <vector>

#include "args.h"
#include "bottleneck_attention.h"
#include "ops/ffn_stack.h"
#include "ops/linear_norm.h"
#include "weight_cache.h"

namespace mbk::torch_cpu {
namespace {

constexpr const char* kOp = "encoder_forward";
constexpr int64_t kAttentionWeights = 18;

at::Tensor encoder_forward(const at::Tensor& h, const std::optional<at::Tensor>& key_mask,
                           at::TensorList weights, int64_t num_layers, int64_t num_heads,
                           c10::string_view mode, c10::string_view norm, c10::string_view act,
                           double eps, at::ArrayRef<double> ffn_eps, bool use_bottleneck) {
  check_f32(h, kOp, "h");
  TORCH_CHECK(h.dim() == 3, "mbkernels_cpu::", kOp, ": h must be [batch, seq, hidden], got ",
              h.sizes());
  const int64_t num_ffn = static_cast<int64_t>(ffn_eps.size());
  TORCH_CHECK(num_layers >= 0 && num_ffn >= 1, "mbkernels_cpu::", kOp,
              ": num_layers must be >= 0 and ffn_eps hold one eps per FFN (>= 1), got ",
              num_layers, " and ", num_ffn);
  const int64_t per_layer = kAttentionWeights + 6 * num_ffn + 4;
  TORCH_CHECK(static_cast<int64_t>(weights.size()) == num_layers * per_layer, "mbkernels_cpu::",
              kOp, ": weights must hold ", per_layer, " tensors per layer (", num_layers,
              " layers), got ", weights.size());
  const int64_t batch = h.size(0), seq = h.size(1), hidden = h.size(2), rows = batch * seq;
  const at::Tensor mask = key_mask_bytes(key_mask, batch, seq, kOp);
  const int threads = at::get_num_threads();
  at::Tensor x = h.contiguous();
  if (num_layers == 0) return x.clone();
  at::Tensor attn, ffn;  // [rows, width], allocated at the first layer
  for (int64_t l = 0; l < num_layers; ++l) {
    const at::TensorList w = weights.slice(l * per_layer, per_layer);
    std::array<std::optional<at::Tensor>, kAttentionWeights> a;
    for (int64_t i = 0; i < kAttentionWeights; ++i)
      if (w[i].numel() > 0) a[i] = w[i];
    const BottleneckAttentionTensors t{a[0],  a[1],  a[2],  a[3],  a[4],  a[5],
                                       a[6],  a[7],  a[8],  a[9],  a[10], a[11],
                                       a[12], a[13], a[14], a[15], a[16], a[17]};
    const PackedBottleneckAttention p = pack_bottleneck_attention(x, t, num_heads, mode, norm, eps, kOp);
    if (!attn.defined()) {
      attn = at::empty({batch, seq, p.width}, h.options());
      ffn = at::empty({batch, seq, p.width}, h.options());
    }
    TORCH_CHECK(attn.size(2) == p.width, "mbkernels_cpu::", kOp, ": layer ", l,
                " has another width than layer 0");
    ops::bottleneck_attention_forward(p.weights, x.const_data_ptr<float>(), hidden, batch, seq,
                                      mask.defined() ? mask.const_data_ptr<uint8_t>() : nullptr,
                                      attn.mutable_data_ptr<float>(), nullptr, threads);

    std::vector<at::Tensor> lists[6];
    for (int64_t f = 0; f < num_ffn; ++f)
      for (int j = 0; j < 6; ++j) lists[j].push_back(w[kAttentionWeights + 6 * f + j]);
    const FfnStackWeights fw = check_ffn_stack(kOp, attn, lists[0], lists[1], lists[2], lists[3],
                                               lists[4], lists[5], act, norm, ffn_eps);
    std::vector<ops::FfnWeights> ffns;
    for (int64_t f = 0; f < num_ffn; ++f)
      ffns.push_back({fw.intermediate[f].get(), fw.output[f].get(),
                      fw.norm_weight[f].const_data_ptr<float>(),
                      fw.norm_bias[f].const_data_ptr<float>(), static_cast<float>(ffn_eps[f])});
    ops::ffn_stack_forward(attn.const_data_ptr<float>(), p.width, rows, ffns.data(),
                           static_cast<int>(num_ffn), fw.act, fw.norm, ffn.mutable_data_ptr<float>(),
                           p.width, threads);

    if (!use_bottleneck) {  // a BERT-like layer: the FFN output is the layer's
      x = ffn.clone();
      continue;
    }
    const at::TensorList o = w.slice(kAttentionWeights + 6 * num_ffn, 4);
    const std::optional<at::Tensor> bias = o[1].numel() > 0 ? std::optional<at::Tensor>(o[1]) : std::nullopt;
    const LinearNormArgs ln = check_linear_norm(kOp, ffn, o[0], bias, o[2], o[3], x, norm);
    TORCH_CHECK(ln.n == hidden, "mbkernels_cpu::", kOp, ": the output bottleneck of layer ", l,
                " must map back to the hidden width ", hidden, ", got ", ln.n);
    const auto packed = packed_weights(o[0], bias.has_value() ? &*bias : nullptr);
    const at::Tensor nw = o[2].contiguous(), nb = o[3].contiguous();
    at::Tensor y = at::empty({batch, seq, hidden}, h.options());
    ops::linear_norm_forward(ffn.const_data_ptr<float>(), p.width, rows, *packed,
                             x.const_data_ptr<float>(), hidden, ln.norm, nw.const_data_ptr<float>(),
                             nb.const_data_ptr<float>(), static_cast<float>(eps),
                             y.mutable_data_ptr<float>(), hidden, threads);
    x = y;
  }
  return x;
}

}  // namespace
}  // namespace mbk::torch_cpu

TORCH_LIBRARY_FRAGMENT(mbkernels_cpu, m) {
  m.def(
      "encoder_forward(Tensor h, Tensor? key_mask, Tensor[] weights, int num_layers, "
      "int num_heads, str mode, str norm, str act, float eps, float[] ffn_eps, "
      "bool use_bottleneck) -> Tensor");
}

TORCH_LIBRARY_IMPL(mbkernels_cpu, CPU, m) {
  m.impl("encoder_forward", &mbk::torch_cpu::encoder_forward);
}
