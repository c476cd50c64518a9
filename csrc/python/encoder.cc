// encoder (ops/layer.h): a stack of MobileBERT layers in one call, for inference: per layer
// bottleneck_attention -> ffn_stack -> the output bottleneck's linear_norm (residual: the layer's
// input), fp32, no dropout, no scores, no per-layer hidden states (the per-op path serves those).
// The semantics of the former mbkernels_cpu::encoder_forward (mbkernels/ops/encoder.py).
//
//   _C.encoder_forward(
//       h: int,                  # float32 [batch, seq, hidden] contiguous, IN/OUT: the layers run
//                                # in place (pass a clone: the op's result is h after the call)
//       batch: int, seq: int, hidden: int,
//       key_mask: int,           # uint8 [batch, seq] contiguous, nonzero = attend; 0 = None
//       over_h: list[PackedWeights],                   # per layer, the GEMM over h, stacked along N:
//                                                      #   shared [Wi; Wa; Wv], bottleneck [Wi],
//                                                      #   full [Wi; Wq; Wk; Wv], none [Wq; Wk; Wv]
//       over_bottleneck: list[PackedWeights | None],   # per layer: shared [Wq; Wk] (over s),
//                                                      #   bottleneck [Wq; Wk; Wv] (over b), else None
//       attention_output: list[PackedWeights],         # per layer, Wo [width, width] with bo
//       attention_norms: list[list[int]],              # per layer 6 pointers, [width] each:
//                                                      #   [input_norm_weight, input_norm_bias,
//                                                      #    attention_norm_weight, attention_norm_bias,
//                                                      #    output_norm_weight, output_norm_bias]
//                                                      #   (0 for what the mode does not use: input_*
//                                                      #   in mode none, attention_* outside shared)
//       ffn_intermediate: list[list[PackedWeights]],   # [layer][ffn]: W1 [inter, width] with b1
//       ffn_output: list[list[PackedWeights]],         # [layer][ffn]: W2 [width, inter] with b2
//       ffn_norm_weights: list[list[int]],             # [layer][ffn]: [width]
//       ffn_norm_biases: list[list[int]],              # [layer][ffn]: [width]
//       output: list[PackedWeights | None],            # per layer, the output bottleneck W
//                                                      #   [hidden, width] with its bias; None = no
//                                                      #   bottleneck (use_bottleneck=False: the FFN
//                                                      #   output is the layer's, width == hidden)
//       output_norm_weights: list[int],                # per layer, [hidden] (0 with output None)
//       output_norm_biases: list[int],                 # per layer, [hidden] (0 with output None)
//       num_heads: int,
//       mode: str,               # "shared" | "bottleneck" | "full" | "none"
//       norm: str,               # "nonorm" | "layernorm": every norm of every layer
//       act: str,                # "relu" | "gelu": the FFNs'
//       eps: float,              # the attention block's norms and the output bottleneck's
//       ffn_eps: list[float],    # one per FFN (the same in every layer); its length is the FFN count
//       threads: int,
//   ) -> None
//
// The stacked weights are what ops/bottleneck_attention.h takes (the old op stacked the 18 raw
// tensors itself): Python concatenates the Linears' weights and biases in the order above and
// packs them once with _C.pack_weights (the packed-weight cache). The workspace is the core's
// per-thread buffer. ValueError names what is inconsistent.
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "binding.h"
#include "ops/layer.h"

namespace mbk::python {
namespace {

ops::AttentionMode parse_mode(const std::string& mode) {
  if (mode == "shared") return ops::AttentionMode::shared;
  if (mode == "bottleneck") return ops::AttentionMode::bottleneck;
  if (mode == "full") return ops::AttentionMode::full;
  if (mode == "none") return ops::AttentionMode::none;
  throw std::invalid_argument("mode: expected 'shared', 'bottleneck', 'full' or 'none', got '" +
                              mode + "'");
}

[[noreturn]] void fail(const std::string& what) {
  throw std::invalid_argument("encoder_forward: " + what);
}

void encoder_forward(Ptr h, int64_t batch, int64_t seq, int64_t hidden, Ptr key_mask,
                     const std::vector<Packed>& over_h,
                     const std::vector<std::optional<Packed>>& over_bottleneck,
                     const std::vector<Packed>& attention_output,
                     const std::vector<std::vector<Ptr>>& attention_norms,
                     const std::vector<std::vector<Packed>>& ffn_intermediate,
                     const std::vector<std::vector<Packed>>& ffn_output,
                     const std::vector<std::vector<Ptr>>& ffn_norm_weights,
                     const std::vector<std::vector<Ptr>>& ffn_norm_biases,
                     const std::vector<std::optional<Packed>>& output,
                     const std::vector<Ptr>& output_norm_weights,
                     const std::vector<Ptr>& output_norm_biases, int64_t num_heads,
                     const std::string& mode, const std::string& norm, const std::string& act,
                     float eps, const std::vector<float>& ffn_eps, int threads) {
  const size_t layers = over_h.size();
  if (over_bottleneck.size() != layers || attention_output.size() != layers ||
      attention_norms.size() != layers || ffn_intermediate.size() != layers ||
      ffn_output.size() != layers || ffn_norm_weights.size() != layers ||
      ffn_norm_biases.size() != layers || output.size() != layers ||
      output_norm_weights.size() != layers || output_norm_biases.size() != layers)
    fail("every per-layer list needs one entry per layer (" + std::to_string(layers) +
         ", the length of over_h)");
  const size_t num_ffn = ffn_eps.size();
  if (num_ffn < 1) fail("ffn_eps must hold one eps per FFN (>= 1)");
  if (batch < 0 || seq < 0 || hidden < 1) fail("batch and seq must be >= 0 and hidden >= 1");
  if (h == 0 && batch * seq > 0) fail("h must not be None");
  const ops::AttentionMode m = parse_mode(mode);
  const gemm::Norm n = parse_norm(norm);
  const gemm::Act a = parse_act(act);
  if (n == gemm::Norm::none) fail("norm must be 'nonorm' or 'layernorm'");
  if (a == gemm::Act::none) fail("act must be 'relu' or 'gelu'");

  std::vector<std::vector<ops::FfnWeights>> ffns(layers);
  std::vector<ops::LayerWeights> w(layers);
  for (size_t l = 0; l < layers; ++l) {
    const std::string at = " (layer " + std::to_string(l) + ")";
    if (!over_h[l] || !attention_output[l]) fail("over_h and attention_output must not be None" + at);
    if (over_h[l]->k() != hidden)
      fail("over_h must take the hidden width " + std::to_string(hidden) + ", got " +
           std::to_string(over_h[l]->k()) + at);
    if (attention_norms[l].size() != 6) fail("attention_norms needs 6 pointers per layer" + at);
    if (ffn_intermediate[l].size() != num_ffn || ffn_output[l].size() != num_ffn ||
        ffn_norm_weights[l].size() != num_ffn || ffn_norm_biases[l].size() != num_ffn)
      fail("every FFN list needs " + std::to_string(num_ffn) + " entries (len(ffn_eps))" + at);
    for (size_t f = 0; f < num_ffn; ++f) {
      if (!ffn_intermediate[l][f] || !ffn_output[l][f]) fail("FFN weights must not be None" + at);
      ffns[l].push_back({ffn_intermediate[l][f].get(), ffn_output[l][f].get(),
                         in(ffn_norm_weights[l][f]), in(ffn_norm_biases[l][f]), ffn_eps[f]});
    }
    ops::BottleneckAttentionWeights& b = w[l].attention;
    const std::vector<Ptr>& an = attention_norms[l];
    b.mode = m;
    b.over_h = over_h[l].get();
    b.over_bottleneck = over_bottleneck[l].has_value() ? over_bottleneck[l]->get() : nullptr;
    b.output = attention_output[l].get();
    b.norm = n;
    b.eps = eps;
    b.input_norm_weight = in(an[0]);
    b.input_norm_bias = in(an[1]);
    b.attention_norm_weight = in(an[2]);
    b.attention_norm_bias = in(an[3]);
    b.output_norm_weight = in(an[4]);
    b.output_norm_bias = in(an[5]);
    b.heads = num_heads;
    const bool needs_input = m != ops::AttentionMode::none, needs_attention = m == ops::AttentionMode::shared;
    if ((needs_input && (an[0] == 0 || an[1] == 0)) || (needs_attention && (an[2] == 0 || an[3] == 0)) ||
        an[4] == 0 || an[5] == 0)
      fail("attention_norms lacks a norm weight or bias mode '" + mode + "' uses" + at);
    w[l].ffns = ffns[l].data();
    w[l].ffn_count = static_cast<int>(num_ffn);
    w[l].act = a;
    w[l].output = output[l].has_value() ? output[l]->get() : nullptr;
    w[l].output_norm_weight = in(output_norm_weights[l]);
    w[l].output_norm_bias = in(output_norm_biases[l]);
    w[l].eps = eps;
  }
  py::gil_scoped_release release;
  ops::encoder_forward(w.data(), static_cast<int>(layers), out(h), batch, seq, in<uint8_t>(key_mask),
                       threads);
}

}  // namespace

void bind_encoder(py::module_& m) {
  m.def("encoder_forward", &encoder_forward, py::arg("h"), py::arg("batch"), py::arg("seq"),
        py::arg("hidden"), py::arg("key_mask"), py::arg("over_h"), py::arg("over_bottleneck"),
        py::arg("attention_output"), py::arg("attention_norms"), py::arg("ffn_intermediate"),
        py::arg("ffn_output"), py::arg("ffn_norm_weights"), py::arg("ffn_norm_biases"),
        py::arg("output"), py::arg("output_norm_weights"), py::arg("output_norm_biases"),
        py::arg("num_heads"), py::arg("mode"), py::arg("norm"), py::arg("act"), py::arg("eps"),
        py::arg("ffn_eps"), py::arg("threads"),
        "A stack of MobileBERT layers on h in place, for inference (see csrc/python/encoder.cc).");
}

}  // namespace mbk::python
