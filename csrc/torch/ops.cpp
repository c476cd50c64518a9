// The private CPU ops that mbkernels' Python custom ops call: thin wrappers that check their
// arguments, make them contiguous and run the torch-free kernels of csrc/core. Schemas are frozen
// (DESIGN.md, "The ops"); the public autograd-enabled ops live in mbkernels/ops/.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "ops/ffn_stack.h"
#include "ops/layernorm.h"
#include "ops/linear_norm.h"
#include "ops/nonorm.h"
#include "ops/norm.h"
#include "args.h"
#include "weight_cache.h"

namespace mbk::torch_cpu {
namespace {

void check_tensor(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "mbkernels_cpu::", op, ": ", name,
              " must be a CPU tensor, got device ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "mbkernels_cpu::", op, ": ", name,
              " must be float32 or float64 (the C++ CPU kernels take float32/float64; the "
              "reference and Triton backends take float16/bfloat16), got ",
              t.scalar_type());
}

void check_same_dtype(const at::Tensor& t, const at::Tensor& x, const char* op,
                      const char* name) {
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), "mbkernels_cpu::", op, ": ", name,
              " must have the dtype of x (", x.scalar_type(), "), got ", t.scalar_type());
}

// x is [..., C] with C = weight.numel(); weight (and bias) are [C]; residual is shaped like x.
void check_nonorm_args(const char* op, const at::Tensor& x, const at::Tensor& weight,
                       const at::Tensor* bias, const std::optional<at::Tensor>& residual) {
  check_tensor(x, op, "x");
  check_tensor(weight, op, "weight");
  check_same_dtype(weight, x, op, "weight");
  TORCH_CHECK(x.dim() >= 1, "mbkernels_cpu::", op,
              ": x must have at least 1 dimension (features last), got a 0-d tensor");
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == x.size(-1), "mbkernels_cpu::", op,
              ": weight must have shape [", x.size(-1), "] (the last dim of x), got ",
              weight.sizes());
  if (bias != nullptr) {
    check_tensor(*bias, op, "bias");
    check_same_dtype(*bias, x, op, "bias");
    TORCH_CHECK(bias->sizes() == weight.sizes(), "mbkernels_cpu::", op, ": bias must have shape ",
                weight.sizes(), " (like weight), got ", bias->sizes());
  }
  if (residual.has_value()) {
    check_tensor(*residual, op, "residual");
    check_same_dtype(*residual, x, op, "residual");
    TORCH_CHECK(residual->sizes() == x.sizes(), "mbkernels_cpu::", op,
                ": residual must have the shape of x ", x.sizes(), ", got ", residual->sizes());
  }
}

template <typename T>
const T* ptr_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->const_data_ptr<T>() : nullptr;
}

at::Tensor nonorm_forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                          const std::optional<at::Tensor>& residual) {
  check_nonorm_args("nonorm_forward", x, weight, &bias, residual);
  const at::Tensor xc = x.contiguous(), wc = weight.contiguous(), bc = bias.contiguous();
  std::optional<at::Tensor> rc;
  if (residual.has_value()) rc = residual->contiguous();
  at::Tensor y = at::empty(x.sizes(), xc.options());
  const int64_t cols = weight.numel();
  const int64_t rows = cols > 0 ? xc.numel() / cols : 0;
  const int threads = at::get_num_threads();
  if (x.scalar_type() == at::kFloat)
    mbk::ops::nonorm_forward(xc.const_data_ptr<float>(), ptr_or_null<float>(rc),
                             wc.const_data_ptr<float>(), bc.const_data_ptr<float>(),
                             y.mutable_data_ptr<float>(), rows, cols, threads);
  else
    mbk::ops::nonorm_forward(xc.const_data_ptr<double>(), ptr_or_null<double>(rc),
                             wc.const_data_ptr<double>(), bc.const_data_ptr<double>(),
                             y.mutable_data_ptr<double>(), rows, cols, threads);
  return y;
}

// A norm backward's operands made contiguous and its outputs allocated: grad_x (also the
// residual's gradient), grad_weight, grad_bias over rows x cols.
struct NormBackward {
  at::Tensor g, x, w;
  std::optional<at::Tensor> res;
  at::Tensor gx, gw, gb;
  int64_t rows, cols;
};

NormBackward norm_backward_operands(const char* op, const at::Tensor& grad_out,
                                    const at::Tensor& x, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& residual) {
  check_nonorm_args(op, x, weight, nullptr, residual);
  check_tensor(grad_out, op, "grad_out");
  check_same_dtype(grad_out, x, op, "grad_out");
  TORCH_CHECK(grad_out.sizes() == x.sizes(), "mbkernels_cpu::", op, ": grad_out must have the "
              "shape of x ", x.sizes(), ", got ", grad_out.sizes());
  NormBackward b{grad_out.contiguous(), x.contiguous(), weight.contiguous(), std::nullopt, {}, {}, {}, 0,
                 weight.numel()};
  if (residual.has_value()) b.res = residual->contiguous();
  b.gx = at::empty(x.sizes(), b.x.options());
  b.gw = at::empty(weight.sizes(), b.w.options());
  b.gb = at::empty(weight.sizes(), b.w.options());
  b.rows = b.cols > 0 ? b.x.numel() / b.cols : 0;
  return b;
}

// Returns (grad_x, grad_weight, grad_bias); grad_x is also the residual's gradient.
std::tuple<at::Tensor, at::Tensor, at::Tensor> nonorm_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
    const std::optional<at::Tensor>& residual) {
  NormBackward b = norm_backward_operands("nonorm_backward", grad_out, x, weight, residual);
  const int threads = at::get_num_threads();
  if (x.scalar_type() == at::kFloat)
    mbk::ops::nonorm_backward(b.g.const_data_ptr<float>(), b.x.const_data_ptr<float>(),
                              ptr_or_null<float>(b.res), b.w.const_data_ptr<float>(),
                              b.gx.mutable_data_ptr<float>(), b.gw.mutable_data_ptr<float>(),
                              b.gb.mutable_data_ptr<float>(), b.rows, b.cols, threads);
  else
    mbk::ops::nonorm_backward(b.g.const_data_ptr<double>(), b.x.const_data_ptr<double>(),
                              ptr_or_null<double>(b.res), b.w.const_data_ptr<double>(),
                              b.gx.mutable_data_ptr<double>(), b.gw.mutable_data_ptr<double>(),
                              b.gb.mutable_data_ptr<double>(), b.rows, b.cols, threads);
  return {b.gx, b.gw, b.gb};
}

// LayerNorm of x [+ residual] (fp32; mbkernels.ops runs the reference for other dtypes).
at::Tensor layernorm_forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                             const std::optional<at::Tensor>& residual, double eps) {
  check_nonorm_args("layernorm_forward", x, weight, &bias, residual);
  check_f32(x, "layernorm_forward", "x");
  const at::Tensor xc = x.contiguous(), wc = weight.contiguous(), bc = bias.contiguous();
  std::optional<at::Tensor> rc;
  if (residual.has_value()) rc = residual->contiguous();
  at::Tensor y = at::empty(x.sizes(), xc.options());
  const int64_t cols = weight.numel();
  mbk::ops::layernorm_forward(xc.const_data_ptr<float>(), ptr_or_null<float>(rc),
                              wc.const_data_ptr<float>(), bc.const_data_ptr<float>(),
                              static_cast<float>(eps), y.mutable_data_ptr<float>(),
                              cols > 0 ? xc.numel() / cols : 0, cols, at::get_num_threads());
  return y;
}

// Returns (grad_x, grad_weight, grad_bias); grad_x is also the residual's gradient.
std::tuple<at::Tensor, at::Tensor, at::Tensor> layernorm_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
    const std::optional<at::Tensor>& residual, double eps) {
  check_f32(x, "layernorm_backward", "x");
  NormBackward b = norm_backward_operands("layernorm_backward", grad_out, x, weight, residual);
  mbk::ops::layernorm_backward(b.g.const_data_ptr<float>(), b.x.const_data_ptr<float>(),
                               ptr_or_null<float>(b.res), b.w.const_data_ptr<float>(),
                               static_cast<float>(eps), b.gx.mutable_data_ptr<float>(),
                               b.gw.mutable_data_ptr<float>(), b.gb.mutable_data_ptr<float>(),
                               b.rows, b.cols, at::get_num_threads());
  return {b.gx, b.gw, b.gb};
}

// ---------------------------------------------------------------------------------------------
// The packed-weight GEMM ops (fp32 forward). Weights come from the packed-weight cache
// (weight_cache.h): an inference call with unchanged weights never repacks them.

// norm(x Wᵀ + bias [+ residual]) (linear_norm without dropout).
at::Tensor linear_norm_forward(const at::Tensor& x, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias,
                               const at::Tensor& norm_weight, const at::Tensor& norm_bias,
                               const std::optional<at::Tensor>& residual, c10::string_view norm,
                               double eps) {
  const LinearNormArgs a = check_linear_norm("linear_norm_forward", x, weight, bias, norm_weight,
                                             norm_bias, residual, norm);
  at::Tensor y = at::empty(a.out_shape, x.options());
  if (a.rows == 0 || a.n == 0) return y;
  const auto packed = packed_weights(weight, bias.has_value() ? &*bias : nullptr);
  const auto [xv, ldx] = as_rows(x, a.rows, a.k);
  at::Tensor rv;
  int64_t ldr = a.n;
  if (residual.has_value()) std::tie(rv, ldr) = as_rows(*residual, a.rows, a.n);
  const at::Tensor nw = norm_weight.contiguous(), nb = norm_bias.contiguous();
  mbk::ops::linear_norm_forward(xv.const_data_ptr<float>(), ldx, a.rows, *packed,
                                residual.has_value() ? rv.const_data_ptr<float>() : nullptr, ldr,
                                a.norm, nw.const_data_ptr<float>(), nb.const_data_ptr<float>(),
                                static_cast<float>(eps), y.mutable_data_ptr<float>(), a.n,
                                at::get_num_threads());
  return y;
}

// The training forward of linear_norm: (y, t) with t = x Wᵀ + bias [+ residual] the pre-norm
// [rows, N] that linear_norm_backward takes as `saved` instead of recomputing the GEMM. y is
// linear_norm_forward's output bit for bit (NoNorm: one FMA on the rounded t in both; LayerNorm:
// the same row kernel).
std::vector<at::Tensor> linear_norm_forward_train(const at::Tensor& x, const at::Tensor& weight,
                                                  const std::optional<at::Tensor>& bias,
                                                  const at::Tensor& norm_weight,
                                                  const at::Tensor& norm_bias,
                                                  const std::optional<at::Tensor>& residual,
                                                  c10::string_view norm, double eps) {
  const LinearNormArgs a = check_linear_norm("linear_norm_forward_train", x, weight, bias,
                                             norm_weight, norm_bias, residual, norm);
  at::Tensor y = at::empty(a.out_shape, x.options()), t = at::empty({a.rows, a.n}, x.options());
  if (a.rows == 0 || a.n == 0) return {y, t};
  const auto [xv, ldx] = as_rows(x, a.rows, a.k);
  gemm::Epilogue ep;
  at::Tensor rv;
  if (residual.has_value()) {
    std::tie(rv, ep.ld_residual) = as_rows(*residual, a.rows, a.n);
    ep.residual = rv.const_data_ptr<float>();
  }
  const int threads = at::get_num_threads();
  gemm::gemm(xv.const_data_ptr<float>(), ldx, a.rows,
             *packed_weights(weight, bias.has_value() ? &*bias : nullptr),
             t.mutable_data_ptr<float>(), a.n, ep, threads);
  const at::Tensor nw = norm_weight.contiguous(), nb = norm_bias.contiguous();
  mbk::ops::norm_forward(a.norm, t.const_data_ptr<float>(), nullptr, nw.const_data_ptr<float>(),
                         nb.const_data_ptr<float>(), static_cast<float>(eps),
                         y.mutable_data_ptr<float>(), a.rows, a.n, threads);
  return {y, t};
}

// For each FFN i: x = N_i(act(x W1ᵢᵀ + b1ᵢ) W2ᵢᵀ + b2ᵢ + x) (ffn_stack without dropout). With
// `saved` (the training forward) the intermediates are kept in it: [inputs of FFNs 1.., their
// activations, their pre-norm sums] (ops/ffn_stack.h FfnSaved), for ffn_stack_backward.
at::Tensor run_ffn_stack(const at::Tensor& x, const FfnStackWeights& f, at::ArrayRef<double> eps,
                         std::vector<at::Tensor>* saved) {
  std::vector<mbk::ops::FfnWeights> ffns;
  for (int64_t i = 0; i < f.count; ++i)
    ffns.push_back({f.intermediate[i].get(), f.output[i].get(),
                    f.norm_weight[i].const_data_ptr<float>(),
                    f.norm_bias[i].const_data_ptr<float>(), static_cast<float>(eps[i])});
  const int64_t rows = leading_rows(x);
  at::Tensor y = at::empty(x.sizes(), x.options());
  mbk::ops::FfnSaved keep{};
  if (saved != nullptr) {
    *saved = {at::empty({f.count - 1, rows, f.width}, x.options()),
              at::empty({f.count, rows, f.max_inter}, x.options()),
              at::empty({f.count, rows, f.width}, x.options())};
    keep = {(*saved)[0].mutable_data_ptr<float>(), (*saved)[1].mutable_data_ptr<float>(),
            (*saved)[2].mutable_data_ptr<float>()};
  }
  if (rows == 0 || f.width == 0) return y;
  const auto [xv, ldx] = as_rows(x, rows, f.width);
  mbk::ops::ffn_stack_forward(xv.const_data_ptr<float>(), ldx, rows, ffns.data(),
                              static_cast<int>(f.count), f.act, f.norm,
                              y.mutable_data_ptr<float>(), f.width, at::get_num_threads(),
                              saved != nullptr ? &keep : nullptr);
  return y;
}

at::Tensor ffn_stack_forward(const at::Tensor& x, at::TensorList w1, at::TensorList b1,
                             at::TensorList w2, at::TensorList b2, at::TensorList nw,
                             at::TensorList nb, c10::string_view act, c10::string_view norm,
                             at::ArrayRef<double> eps) {
  return run_ffn_stack(
      x, check_ffn_stack("ffn_stack_forward", x, w1, b1, w2, b2, nw, nb, act, norm, eps), eps,
      nullptr);
}

// The training forward: the output and the intermediates ffn_stack_backward takes as `saved`
// instead of recomputing the forward's GEMMs. ReLU with one intermediate width only (else the
// backward recomputes: call ffn_stack_forward).
std::vector<at::Tensor> ffn_stack_forward_train(const at::Tensor& x, at::TensorList w1,
                                                at::TensorList b1, at::TensorList w2,
                                                at::TensorList b2, at::TensorList nw,
                                                at::TensorList nb, c10::string_view act,
                                                c10::string_view norm, at::ArrayRef<double> eps) {
  constexpr const char* op = "ffn_stack_forward_train";
  const FfnStackWeights f = check_ffn_stack(op, x, w1, b1, w2, b2, nw, nb, act, norm, eps);
  TORCH_CHECK(f.act == gemm::Act::relu, "mbkernels_cpu::", op, ": act must be 'relu', got '",
              std::string(act), "'");
  for (int64_t i = 0; i < f.count; ++i)
    TORCH_CHECK(w1[i].size(0) == f.max_inter, "mbkernels_cpu::", op,
                ": every FFN must have the same intermediate width, got ", w1[i].size(0),
                " for FFN ", i, " and ", f.max_inter, " for another");
  std::vector<at::Tensor> saved;
  at::Tensor y = run_ffn_stack(x, f, eps, &saved);
  saved.insert(saved.begin(), std::move(y));
  return saved;
}

}  // namespace
}  // namespace mbk::torch_cpu

TORCH_LIBRARY(mbkernels_cpu, m) {
  m.def("nonorm_forward(Tensor x, Tensor weight, Tensor bias, Tensor? residual) -> Tensor");
  m.def(
      "nonorm_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor? residual) -> "
      "(Tensor, Tensor, Tensor)");
  m.def(
      "layernorm_forward(Tensor x, Tensor weight, Tensor bias, Tensor? residual, float eps) -> "
      "Tensor");
  m.def(
      "layernorm_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor? residual, float eps) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "linear_norm_forward(Tensor x, Tensor weight, Tensor? bias, Tensor norm_weight, "
      "Tensor norm_bias, Tensor? residual, str norm, float eps) -> Tensor");
  m.def(
      "linear_norm_forward_train(Tensor x, Tensor weight, Tensor? bias, Tensor norm_weight, "
      "Tensor norm_bias, Tensor? residual, str norm, float eps) -> Tensor[]");
  m.def(
      "ffn_stack_forward(Tensor x, Tensor[] intermediate_weights, Tensor[] intermediate_biases, "
      "Tensor[] output_weights, Tensor[] output_biases, Tensor[] norm_weights, "
      "Tensor[] norm_biases, str act, str norm, float[] eps) -> Tensor");
  m.def(
      "ffn_stack_forward_train(Tensor x, Tensor[] intermediate_weights, "
      "Tensor[] intermediate_biases, Tensor[] output_weights, Tensor[] output_biases, "
      "Tensor[] norm_weights, Tensor[] norm_biases, str act, str norm, float[] eps) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(mbkernels_cpu, CPU, m) {
  m.impl("nonorm_forward", &mbk::torch_cpu::nonorm_forward);
  m.impl("nonorm_backward", &mbk::torch_cpu::nonorm_backward);
  m.impl("layernorm_forward", &mbk::torch_cpu::layernorm_forward);
  m.impl("layernorm_backward", &mbk::torch_cpu::layernorm_backward);
  m.impl("linear_norm_forward", &mbk::torch_cpu::linear_norm_forward);
  m.impl("linear_norm_forward_train", &mbk::torch_cpu::linear_norm_forward_train);
  m.impl("ffn_stack_forward", &mbk::torch_cpu::ffn_stack_forward);
  m.impl("ffn_stack_forward_train", &mbk::torch_cpu::ffn_stack_forward_train);
}
