// bottleneck_attention's forward (ops/bottleneck_attention.h): the GEMM over h on the mode's stacked
// weights with the per-segment norms, the GEMM over the bottleneck, the attention core (no B×H×S×S
// buffer unless scores are asked for) and the output projection with residual and norm fused, in one
// core call; attention and hidden dropout from the seed's counter-based masks. The stackings are
// packed in Python (mbkernels/ops/bottleneck_attention.py, one cached packing per concatenation).
// The training forward (which keeps the intermediates) and the backward are composed there from
// _C.gemm, _C.norm_forward, _C.attention_forward / _C.attention_backward, _C.dropout_rows and
// _C.norm_backward (the gradient GEMMs are torch's).
#include <optional>
#include <stdexcept>

#include "binding.h"
#include "dropout.h"
#include "ops/bottleneck_attention.h"

namespace mbk::python {
namespace {

// The dropout streams of mbkernels/ops/dropout.py: attention probabilities 0, hidden 1.
constexpr uint32_t kAttnStream = 0, kHiddenStream = 1;

ops::AttentionMode parse_mode(const std::string& mode) {
  if (mode == "shared") return ops::AttentionMode::shared;
  if (mode == "bottleneck") return ops::AttentionMode::bottleneck;
  if (mode == "full") return ops::AttentionMode::full;
  if (mode == "none") return ops::AttentionMode::none;
  throw std::invalid_argument("mode: expected 'shared', 'bottleneck', 'full' or 'none', got '" + mode + "'");
}

}  // namespace

void bind_bottleneck_attention(py::module_& m) {
  // h [batch·seq, hidden] (row stride ldh); key_mask [batch, seq] uint8 contiguous or 0; over_h,
  // over_bottleneck (None in modes full and none) and output: the packed stackings of
  // ops/bottleneck_attention.h; norm parameters [width] contiguous (0 where the mode has none);
  // out [batch·seq, width] contiguous; scores [batch, heads, seq, seq] contiguous or 0.
  m.def(
      "bottleneck_attention_forward",
      [](Ptr h, int64_t ldh, int64_t batch, int64_t seq, Ptr key_mask, const Packed& over_h,
         const std::optional<Packed>& over_bottleneck, const Packed& output, const std::string& mode,
         const std::string& norm, float eps, int64_t heads, Ptr input_norm_weight, Ptr input_norm_bias,
         Ptr attention_norm_weight, Ptr attention_norm_bias, Ptr output_norm_weight, Ptr output_norm_bias,
         double attn_dropout_p, double hidden_dropout_p, int64_t seed, Ptr y, Ptr scores, int threads) {
        ops::BottleneckAttentionWeights w{};
        w.mode = parse_mode(mode);
        w.over_h = over_h.get();
        w.over_bottleneck = over_bottleneck.has_value() ? over_bottleneck->get() : nullptr;
        w.output = output.get();
        w.norm = parse_norm(norm);
        w.eps = eps;
        w.input_norm_weight = in(input_norm_weight);
        w.input_norm_bias = in(input_norm_bias);
        w.attention_norm_weight = in(attention_norm_weight);
        w.attention_norm_bias = in(attention_norm_bias);
        w.output_norm_weight = in(output_norm_weight);
        w.output_norm_bias = in(output_norm_bias);
        w.heads = heads;
        const ops::BottleneckAttentionDropout dropout{dropout_mask(attn_dropout_p, seed, kAttnStream),
                                                      dropout_mask(hidden_dropout_p, seed, kHiddenStream)};
        py::gil_scoped_release release;
        ops::bottleneck_attention_forward(w, in(h), ldh, batch, seq, in<uint8_t>(key_mask), out(y),
                                          out(scores), threads, nullptr, dropout);
      },
      py::arg("h"), py::arg("ldh"), py::arg("batch"), py::arg("seq"), py::arg("key_mask"),
      py::arg("over_h"), py::arg("over_bottleneck"), py::arg("output"), py::arg("mode"), py::arg("norm"),
      py::arg("eps"), py::arg("heads"), py::arg("input_norm_weight"), py::arg("input_norm_bias"),
      py::arg("attention_norm_weight"), py::arg("attention_norm_bias"), py::arg("output_norm_weight"),
      py::arg("output_norm_bias"), py::arg("attn_dropout_p"), py::arg("hidden_dropout_p"), py::arg("seed"),
      py::arg("y"), py::arg("scores"), py::arg("threads"));
}

}  // namespace mbk::python
