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
#include "ops/linear_norm.h"
#include "ops/nonorm.h"
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

// Returns (grad_x, grad_weight, grad_bias); grad_x is also the residual's gradient.
std::tuple<at::Tensor, at::Tensor, at::Tensor> nonorm_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
    const std::optional<at::Tensor>& residual) {
  check_nonorm_args("nonorm_backward", x, weight, nullptr, residual);
  check_tensor(grad_out, "nonorm_backward", "grad_out");
  check_same_dtype(grad_out, x, "nonorm_backward", "grad_out");
  TORCH_CHECK(grad_out.sizes() == x.sizes(), "mbkernels_cpu::nonorm_backward: grad_out must have "
              "the shape of x ", x.sizes(), ", got ", grad_out.sizes());
  const at::Tensor gc = grad_out.contiguous(), xc = x.contiguous(), wc = weight.contiguous();
  std::optional<at::Tensor> rc;
  if (residual.has_value()) rc = residual->contiguous();
  at::Tensor gx = at::empty(x.sizes(), xc.options());
  at::Tensor gw = at::empty(weight.sizes(), wc.options());
  at::Tensor gb = at::empty(weight.sizes(), wc.options());
  const int64_t cols = weight.numel();
  const int64_t rows = cols > 0 ? xc.numel() / cols : 0;
  const int threads = at::get_num_threads();
  if (x.scalar_type() == at::kFloat)
    mbk::ops::nonorm_backward(gc.const_data_ptr<float>(), xc.const_data_ptr<float>(),
                              ptr_or_null<float>(rc), wc.const_data_ptr<float>(),
                              gx.mutable_data_ptr<float>(), gw.mutable_data_ptr<float>(),
                              gb.mutable_data_ptr<float>(), rows, cols, threads);
  else
    mbk::ops::nonorm_backward(gc.const_data_ptr<double>(), xc.const_data_ptr<double>(),
                              ptr_or_null<double>(rc), wc.const_data_ptr<double>(),
                              gx.mutable_data_ptr<double>(), gw.mutable_data_ptr<double>(),
                              gb.mutable_data_ptr<double>(), rows, cols, threads);
  return {gx, gw, gb};
}

// ---------------------------------------------------------------------------------------------
// The packed-weight GEMM ops (fp32 forward). Weights come from the packed-weight cache
// (weight_cache.h): an inference call with unchanged weights never repacks them.

void check_f32(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "mbkernels_cpu::", op, ": ", name,
              " must be a CPU tensor, got device ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat, "mbkernels_cpu::", op, ": ", name,
              " must be float32 (the C++ GEMM kernels are fp32; mbkernels.ops runs the "
              "reference for other dtypes), got ", t.scalar_type());
}

void check_vector(const at::Tensor& t, int64_t n, const char* op, const char* name) {
  check_f32(t, op, name);
  TORCH_CHECK(t.dim() == 1 && t.size(0) == n, "mbkernels_cpu::", op, ": ", name,
              " must have shape [", n, "], got ", t.sizes());
}

gemm::Norm parse_norm(c10::string_view norm, const char* op) {
  if (norm == "nonorm") return gemm::Norm::nonorm;
  TORCH_CHECK(norm == "layernorm", "mbkernels_cpu::", op,
              ": norm must be 'nonorm' or 'layernorm', got '", std::string(norm), "'");
  return gemm::Norm::layernorm;
}

gemm::Act parse_act(c10::string_view act, const char* op) {
  if (act == "relu") return gemm::Act::relu;
  TORCH_CHECK(act == "gelu", "mbkernels_cpu::", op, ": act must be 'relu' or 'gelu', got '",
              std::string(act), "'");
  return gemm::Act::gelu;
}

// t as [rows, cols] rows with unit column stride and its row stride: a view when t's strides allow
// it (no copy for contiguous or row-sliced inputs), else a contiguous copy.
std::pair<at::Tensor, int64_t> as_rows(const at::Tensor& t, int64_t rows, int64_t cols) {
  at::Tensor v = t.reshape({rows, cols});
  if (cols > 1 && v.stride(1) != 1) v = v.contiguous();
  return {v, rows > 1 ? v.stride(0) : cols};
}

int64_t leading_rows(const at::Tensor& x) {
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) rows *= x.size(d);
  return rows;
}

// weight [N, K] float32 with K = the last dim of x.
void check_linear_weight(const at::Tensor& w, int64_t k, const char* op, const char* name) {
  check_f32(w, op, name);
  TORCH_CHECK(w.dim() == 2 && w.size(1) == k, "mbkernels_cpu::", op, ": ", name,
              " must have shape [out_features, ", k, "], got ", w.sizes());
}

std::vector<int64_t> with_last(const at::Tensor& x, int64_t last) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = last;
  return shape;
}

// norm(x Wᵀ + bias [+ residual]) (linear_norm without dropout).
at::Tensor linear_norm_forward(const at::Tensor& x, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias,
                               const at::Tensor& norm_weight, const at::Tensor& norm_bias,
                               const std::optional<at::Tensor>& residual, c10::string_view norm,
                               double eps) {
  constexpr const char* op = "linear_norm_forward";
  check_f32(x, op, "x");
  TORCH_CHECK(x.dim() >= 1, "mbkernels_cpu::", op,
              ": x must have at least 1 dimension (features last), got a 0-d tensor");
  const int64_t k = x.size(-1);
  check_linear_weight(weight, k, op, "weight");
  const int64_t n = weight.size(0);
  if (bias.has_value()) check_vector(*bias, n, op, "bias");
  check_vector(norm_weight, n, op, "norm_weight");
  check_vector(norm_bias, n, op, "norm_bias");
  const gemm::Norm kind = parse_norm(norm, op);
  const std::vector<int64_t> out_shape = with_last(x, n);
  if (residual.has_value()) {
    check_f32(*residual, op, "residual");
    TORCH_CHECK(residual->sizes() == at::IntArrayRef(out_shape), "mbkernels_cpu::", op,
                ": residual must have shape ", at::IntArrayRef(out_shape),
                " (x's with the last dim out_features), got ", residual->sizes());
  }
  const int64_t rows = leading_rows(x);
  at::Tensor y = at::empty(out_shape, x.options());
  if (rows == 0 || n == 0) return y;
  const auto packed = packed_weights(weight, bias.has_value() ? &*bias : nullptr);
  const auto [xv, ldx] = as_rows(x, rows, k);
  at::Tensor rv;
  int64_t ldr = n;
  if (residual.has_value()) std::tie(rv, ldr) = as_rows(*residual, rows, n);
  const at::Tensor nw = norm_weight.contiguous(), nb = norm_bias.contiguous();
  mbk::ops::linear_norm_forward(xv.const_data_ptr<float>(), ldx, rows, *packed,
                                residual.has_value() ? rv.const_data_ptr<float>() : nullptr, ldr,
                                kind, nw.const_data_ptr<float>(), nb.const_data_ptr<float>(),
                                static_cast<float>(eps), y.mutable_data_ptr<float>(), n,
                                at::get_num_threads());
  return y;
}

// For each FFN i: x = N_i(act(x W1ᵢᵀ + b1ᵢ) W2ᵢᵀ + b2ᵢ + x) (ffn_stack without dropout).
at::Tensor ffn_stack_forward(const at::Tensor& x, at::TensorList w1, at::TensorList b1,
                             at::TensorList w2, at::TensorList b2, at::TensorList nw,
                             at::TensorList nb, c10::string_view act, c10::string_view norm,
                             at::ArrayRef<double> eps) {
  constexpr const char* op = "ffn_stack_forward";
  check_f32(x, op, "x");
  TORCH_CHECK(x.dim() >= 1, "mbkernels_cpu::", op,
              ": x must have at least 1 dimension (features last), got a 0-d tensor");
  const int64_t count = static_cast<int64_t>(w1.size());
  TORCH_CHECK(count >= 1, "mbkernels_cpu::", op,
              ": intermediate_weights must hold at least one FFN, got an empty list");
  const std::pair<at::TensorList, const char*> lists[] = {
      {b1, "intermediate_biases"}, {w2, "output_weights"}, {b2, "output_biases"},
      {nw, "norm_weights"}, {nb, "norm_biases"}};
  for (const auto& [list, name] : lists)
    TORCH_CHECK(static_cast<int64_t>(list.size()) == count, "mbkernels_cpu::", op, ": ", name,
                " must have ", count, " entries (one per FFN), got ", list.size());
  TORCH_CHECK(static_cast<int64_t>(eps.size()) == count, "mbkernels_cpu::", op, ": eps must have ",
              count, " entries (one per FFN), got ", eps.size());
  const gemm::Act act_kind = parse_act(act, op);
  const gemm::Norm norm_kind = parse_norm(norm, op);
  const int64_t width = x.size(-1);

  std::vector<std::shared_ptr<const gemm::PackedWeights>> packed;
  std::vector<at::Tensor> norm_params;
  std::vector<mbk::ops::FfnWeights> ffns;
  for (int64_t i = 0; i < count; ++i) {
    const auto item = [i](const char* list) { return std::string(list) + "[" + std::to_string(i) + "]"; };
    check_linear_weight(w1[i], width, op, item("intermediate_weights").c_str());
    const int64_t inter = w1[i].size(0);
    check_vector(b1[i], inter, op, item("intermediate_biases").c_str());
    check_linear_weight(w2[i], inter, op, item("output_weights").c_str());
    TORCH_CHECK(w2[i].size(0) == width, "mbkernels_cpu::", op, ": output_weights[", i,
                "] must have shape [", width, ", ", inter, "], got ", w2[i].sizes());
    check_vector(b2[i], width, op, item("output_biases").c_str());
    check_vector(nw[i], width, op, item("norm_weights").c_str());
    check_vector(nb[i], width, op, item("norm_biases").c_str());
    packed.push_back(packed_weights(w1[i], &b1[i]));
    packed.push_back(packed_weights(w2[i], &b2[i]));
    norm_params.push_back(nw[i].contiguous());
    norm_params.push_back(nb[i].contiguous());
  }
  for (int64_t i = 0; i < count; ++i)
    ffns.push_back({packed[2 * i].get(), packed[2 * i + 1].get(),
                    norm_params[2 * i].const_data_ptr<float>(),
                    norm_params[2 * i + 1].const_data_ptr<float>(), static_cast<float>(eps[i])});
  const int64_t rows = leading_rows(x);
  at::Tensor y = at::empty(x.sizes(), x.options());
  if (rows == 0 || width == 0) return y;
  const auto [xv, ldx] = as_rows(x, rows, width);
  mbk::ops::ffn_stack_forward(xv.const_data_ptr<float>(), ldx, rows, ffns.data(),
                              static_cast<int>(count), act_kind, norm_kind,
                              y.mutable_data_ptr<float>(), width, at::get_num_threads());
  return y;
}

}  // namespace
}  // namespace mbk::torch_cpu

TORCH_LIBRARY(mbkernels_cpu, m) {
  m.def("nonorm_forward(Tensor x, Tensor weight, Tensor bias, Tensor? residual) -> Tensor");
  m.def(
      "nonorm_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor? residual) -> "
      "(Tensor, Tensor, Tensor)");
  m.def(
      "linear_norm_forward(Tensor x, Tensor weight, Tensor? bias, Tensor norm_weight, "
      "Tensor norm_bias, Tensor? residual, str norm, float eps) -> Tensor");
  m.def(
      "ffn_stack_forward(Tensor x, Tensor[] intermediate_weights, Tensor[] intermediate_biases, "
      "Tensor[] output_weights, Tensor[] output_biases, Tensor[] norm_weights, "
      "Tensor[] norm_biases, str act, str norm, float[] eps) -> Tensor");
}

TORCH_LIBRARY_IMPL(mbkernels_cpu, CPU, m) {
  m.impl("nonorm_forward", &mbk::torch_cpu::nonorm_forward);
  m.impl("nonorm_backward", &mbk::torch_cpu::nonorm_backward);
  m.impl("linear_norm_forward", &mbk::torch_cpu::linear_norm_forward);
  m.impl("ffn_stack_forward", &mbk::torch_cpu::ffn_stack_forward);
}
