// mbkernels._C: ISA selection, the fp32 peak, weight packing and the GEMM pieces the ops' Python
// backwards compose; each op's own functions (`<op>_forward`, `<op>_backward`) are in its file.
#include <cstring>
#include <stdexcept>
#include <vector>

#include "binding.h"
#include "cpu.h"
#include "gemm/epilogue_backward.h"
#include "ops/norm.h"
#include "peak.h"

namespace mbk::python {

gemm::Norm parse_norm(const std::string& norm) {
  if (norm == "nonorm") return gemm::Norm::nonorm;
  if (norm == "layernorm") return gemm::Norm::layernorm;
  if (norm == "none") return gemm::Norm::none;
  throw std::invalid_argument("norm: expected 'nonorm', 'layernorm' or 'none', got '" + norm + "'");
}

gemm::Act parse_act(const std::string& act) {
  if (act == "relu") return gemm::Act::relu;
  if (act == "gelu") return gemm::Act::gelu;
  if (act == "none") return gemm::Act::none;
  throw std::invalid_argument("act: expected 'relu', 'gelu' or 'none', got '" + act + "'");
}

namespace {

std::vector<std::string> names(const std::vector<Isa>& isas) {
  std::vector<std::string> out;
  for (Isa isa : isas) out.emplace_back(isa_name(isa));
  return out;
}

// FNV-1a over 32 elements spread over a [rows, cols] float tensor: the packed-weight cache's stamp
// for inference tensors, which have no version counter (mbkernels/ops/_packed.py).
uint64_t fingerprint(Ptr p, int64_t numel, int64_t cols, int64_t stride0, int64_t stride1) {
  constexpr int kSamples = 32;
  const float* x = in(p);
  uint64_t h = 1469598103934665603ull;
  for (int i = 0; i < kSamples && numel > 0; ++i) {
    const int64_t e = numel == 1 ? 0 : (numel - 1) * i / (kSamples - 1);
    uint32_t bits;
    std::memcpy(&bits, x + (e / cols) * stride0 + (e % cols) * stride1, sizeof bits);
    h = (h ^ bits) * 1099511628211ull;
  }
  return h;
}

gemm::Int8Variant int8_variant(const std::string& variant) {
  if (variant == "best") return gemm::Int8Variant::best;
  if (variant == "base") return gemm::Int8Variant::base;
  if (variant == "dot") return gemm::Int8Variant::dot;
  if (variant == "narrow") return gemm::Int8Variant::narrow;
  throw std::invalid_argument("variant: expected 'best', 'base', 'dot' or 'narrow', got '" + variant + "'");
}

}  // namespace
}  // namespace mbk::python

using namespace mbk;
using namespace mbk::python;

PYBIND11_MODULE(_C, m) {
  m.doc() = "mbkernels C++ CPU kernels (torch-free): ISA selection, packing, the ops' kernels";
  m.def("compiled_isas", [] { return names(compiled_isas()); },
        "ISAs built into this extension, e.g. ['scalar', 'avx2', 'avx512', 'neon', "
        "'avx512-simde'].");
  m.def("supported_isas", [] { return names(supported_isas()); }, "Compiled ISAs this CPU can run.");
  m.def("best_isa", [] { return std::string(isa_name(best_isa())); }, "The fastest supported ISA.");
  m.def("get_isa", [] { return std::string(isa_name(active_isa())); },
        "The ISA the kernels use now (process-wide; initially $MBK_ISA if usable, else best).");
  m.def("set_isa", [](const std::string& isa) { set_isa(isa); }, py::arg("isa"),
        "Make the kernels use isa; ValueError if it is unknown, not compiled or not supported.");
  m.def("gemm_kernel", [] { return std::string(gemm::tile(active_isa()).name); },
        "The GEMM microkernel the active ISA runs, e.g. 'f32_gemm_6x16__avx2'.");
  m.def("int8_gemm_kernel", [](int weight_bits) -> std::string {
        if (weight_bits < 2 || weight_bits > 8)
          throw std::invalid_argument("weight_bits: expected 2..8, got " + std::to_string(weight_bits));
        try {
          return gemm::int8_tile(active_isa(), gemm::Int8Variant::best, gemm::int8_weight_max(weight_bits)).name;
        } catch (const std::invalid_argument&) {
          return "";  // this ISA has no int8 kernel
        }
      },
      py::arg("weight_bits") = 8,
      "The int8 GEMM microkernel the active ISA runs for weights of weight_bits bits (e.g. "
      "'q8_gemm_4x16__avx2'; 'q8w7_gemm_5x16__avx2' for 7), '' if it has none.");
  m.def("fma_peak_gflops", &fma_peak_gflops, py::arg("threads"), py::arg("seconds"), nogil(),
        "Measured fp32 FMA throughput in GFLOP/s: `threads` threads of independent vector FMAs on "
        "the best ISA for `seconds` (the benchmarks' CPU fp32 peak).");
  m.def("int8_peak_gops", &int8_peak_gops, py::arg("threads"), py::arg("seconds"), py::arg("weight_bits") = 8,
        nogil(),
        "Measured int8 multiply-accumulate throughput in GOP/s (2 per MAC): the dot product of the int8 "
        "kernel the best ISA runs for weights of weight_bits bits (7 or 8), timed like fma_peak_gflops "
        "(the benchmarks' CPU int8 peak).");

  py::class_<gemm::PackedWeights, Packed>(m, "PackedWeights",
                                          "A Linear's weight (and bias) packed for one ISA's GEMM.")
      .def_property_readonly("n", &gemm::PackedWeights::n)
      .def_property_readonly("k", &gemm::PackedWeights::k)
      .def_property_readonly("isa", [](const gemm::PackedWeights& w) { return std::string(isa_name(w.isa())); })
      .def_property_readonly("bytes", &gemm::PackedWeights::bytes)
      .def_property_readonly("int8", &gemm::PackedWeights::int8)
      .def_property_readonly("kernel", [](const gemm::PackedWeights& w) {
        return std::string(w.int8() ? gemm::int8_tile(w.isa(), w.int8_variant()).name : gemm::tile(w.isa()).name);
      });
  m.def(
      "pack_weights",
      [](Ptr w, int64_t stride_n, int64_t stride_k, Ptr bias, int64_t n, int64_t k) {
        return std::make_shared<gemm::PackedWeights>(in(w), stride_n, stride_k, in(bias), n, k,
                                                     active_isa());
      },
      py::arg("weight"), py::arg("stride_n"), py::arg("stride_k"), py::arg("bias"), py::arg("n"),
      py::arg("k"), nogil(), "weight [n, k] float32 (any strides) and bias [n] (or 0) packed for the active ISA.");
  m.def(
      "pack_weights_int8",
      [](Ptr w, int64_t stride_n, int64_t stride_k, Ptr scale, Ptr smooth, Ptr bias, int64_t n, int64_t k,
         const std::string& variant) {
        const gemm::Int8Weight q{in<int8_t>(w), stride_n, stride_k, in(scale), in(smooth)};
        return std::make_shared<gemm::PackedWeights>(q, in(bias), n, k, active_isa(), int8_variant(variant));
      },
      py::arg("weight"), py::arg("stride_n"), py::arg("stride_k"), py::arg("scale"), py::arg("smooth"),
      py::arg("bias"), py::arg("n"), py::arg("k"), py::arg("variant") = "best", nogil(),
      "weight [n, k] int8 in [-127, 127] (any strides), scale [n] float32 (W ~ weight * scale per row), "
      "smooth [k] float32 or 0 (activation column multipliers) and bias [n] float32 or 0, packed for "
      "the active ISA's int8 GEMM: variant 'best' (the dot-product extension's kernel where the CPU has "
      "it), 'base' or 'dot'; ValueError if the ISA has no such kernel or an argument is out of range.");
  m.def("pack_count", &gemm::pack_count, "PackedWeights built in this process.");
  m.def("fingerprint", &fingerprint, py::arg("data"), py::arg("numel"), py::arg("cols"),
        py::arg("stride0"), py::arg("stride1"));

  // c [m, n] (row stride ldc) = act(a [m, k] Wᵀ + bias) [+ residual]: the forward's GEMMs that the
  // training forwards and recomputing backwards run without a norm.
  m.def(
      "gemm",
      [](Ptr a, int64_t lda, int64_t rows, const Packed& w, Ptr c, int64_t ldc, const std::string& act,
         Ptr residual, int64_t ld_residual, int threads) {
        gemm::Epilogue ep;
        ep.act = parse_act(act);
        ep.residual = in(residual);
        ep.ld_residual = ld_residual;
        gemm::gemm(in(a), lda, rows, *w, out(c), ldc, ep, threads);
      },
      py::arg("a"), py::arg("lda"), py::arg("rows"), py::arg("weight"), py::arg("c"), py::arg("ldc"),
      py::arg("act"), py::arg("residual"), py::arg("ld_residual"), py::arg("threads"), nogil());
  // y = N(x [+ res]) over contiguous rows (norm: nonorm | layernorm).
  m.def(
      "norm_forward",
      [](const std::string& norm, Ptr x, Ptr res, Ptr w, Ptr b, float eps, Ptr y, int64_t rows,
         int64_t cols, int threads) {
        ops::norm_forward(parse_norm(norm), in(x), in(res), in(w), in(b), eps, out(y), rows, cols, threads);
      },
      py::arg("norm"), py::arg("x"), py::arg("res"), py::arg("w"), py::arg("b"), py::arg("eps"),
      py::arg("y"), py::arg("rows"), py::arg("cols"), py::arg("threads"), nogil());
  // t [rows, n] the norm's input, g = dL/dN(t): gt = dL/dt, the norm parameters' gradients gw, gb,
  // and gsum = the column sums of gt (a bias added before the norm), all contiguous.
  m.def(
      "norm_backward",
      [](const std::string& norm, Ptr g, Ptr t, Ptr w, float eps, Ptr gt, Ptr gw, Ptr gb, Ptr gsum,
         int64_t rows, int64_t n, int threads) {
        ops::norm_backward(parse_norm(norm), in(g), in(t), in(w), eps, out(gt), out(gw), out(gb),
                           out(gsum), rows, n, threads);
      },
      py::arg("norm"), py::arg("g"), py::arg("t"), py::arg("w"), py::arg("eps"), py::arg("gt"),
      py::arg("gw"), py::arg("gb"), py::arg("gsum"), py::arg("rows"), py::arg("n"), py::arg("threads"),
      nogil());
  // u [rows, n] the pre-activation (overwritten with act(u)), gh = dL/d act(u): gu = dL/du and its
  // column sums gu_sum (the bias gradient), contiguous.
  m.def(
      "activation_backward",
      [](const std::string& act, Ptr u, Ptr gh, Ptr gu, Ptr gu_sum, int64_t rows, int64_t n, int threads) {
        gemm::activation_backward(parse_act(act), out(u), in(gh), out(gu), out(gu_sum), rows, n,
                                  active_isa(), threads);
      },
      py::arg("act"), py::arg("u"), py::arg("gh"), py::arg("gu"), py::arg("gu_sum"), py::arg("rows"),
      py::arg("n"), py::arg("threads"), nogil());

  bind_norms(m);
  bind_linear_norm(m);
  bind_ffn_stack(m);
  bind_attention(m);
  bind_bottleneck_attention(m);
  bind_embedding(m);
  bind_encoder(m);
}
