// Argument checks and views shared by the private CPU ops (ops.cpp: forwards, backward.cpp:
// backwards): every error names the op, the argument, what was expected and what came.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gemm/gemm.h"
#include "weight_cache.h"

namespace mbk::torch_cpu {

inline void check_f32(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "mbkernels_cpu::", op, ": ", name,
              " must be a CPU tensor, got device ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat, "mbkernels_cpu::", op, ": ", name,
              " must be float32 (the C++ GEMM kernels are fp32; mbkernels.ops runs the "
              "reference for other dtypes), got ", t.scalar_type());
}

inline void check_vector(const at::Tensor& t, int64_t n, const char* op, const char* name) {
  check_f32(t, op, name);
  TORCH_CHECK(t.dim() == 1 && t.size(0) == n, "mbkernels_cpu::", op, ": ", name,
              " must have shape [", n, "], got ", t.sizes());
}

inline gemm::Norm parse_norm(c10::string_view norm, const char* op) {
  if (norm == "nonorm") return gemm::Norm::nonorm;
  TORCH_CHECK(norm == "layernorm", "mbkernels_cpu::", op,
              ": norm must be 'nonorm' or 'layernorm', got '", std::string(norm), "'");
  return gemm::Norm::layernorm;
}

inline gemm::Act parse_act(c10::string_view act, const char* op) {
  if (act == "relu") return gemm::Act::relu;
  TORCH_CHECK(act == "gelu", "mbkernels_cpu::", op, ": act must be 'relu' or 'gelu', got '",
              std::string(act), "'");
  return gemm::Act::gelu;
}

// t as [rows, cols] rows with unit column stride and its row stride: a view when t's strides allow
// it (no copy for contiguous or row-sliced inputs), else a contiguous copy.
inline std::pair<at::Tensor, int64_t> as_rows(const at::Tensor& t, int64_t rows, int64_t cols) {
  at::Tensor v = t.reshape({rows, cols});
  if (cols > 1 && v.stride(1) != 1) v = v.contiguous();
  return {v, rows > 1 ? v.stride(0) : cols};
}

inline int64_t leading_rows(const at::Tensor& x) {
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) rows *= x.size(d);
  return rows;
}

inline void check_features_last(const at::Tensor& x, const char* op) {
  check_f32(x, op, "x");
  TORCH_CHECK(x.dim() >= 1, "mbkernels_cpu::", op,
              ": x must have at least 1 dimension (features last), got a 0-d tensor");
}

// weight [N, K] float32 with K = the last dim of x.
inline void check_linear_weight(const at::Tensor& w, int64_t k, const char* op, const char* name) {
  check_f32(w, op, name);
  TORCH_CHECK(w.dim() == 2 && w.size(1) == k, "mbkernels_cpu::", op, ": ", name,
              " must have shape [out_features, ", k, "], got ", w.sizes());
}

inline std::vector<int64_t> with_last(const at::Tensor& x, int64_t last) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = last;
  return shape;
}

// linear_norm's arguments (x, weight, bias, norm_weight, norm_bias, residual, norm), checked.
struct LinearNormArgs {
  int64_t rows, k, n;
  gemm::Norm norm;
  std::vector<int64_t> out_shape;  // x's shape with the last dim n
};

inline LinearNormArgs check_linear_norm(const char* op, const at::Tensor& x,
                                        const at::Tensor& weight,
                                        const std::optional<at::Tensor>& bias,
                                        const at::Tensor& norm_weight, const at::Tensor& norm_bias,
                                        const std::optional<at::Tensor>& residual,
                                        c10::string_view norm) {
  check_features_last(x, op);
  const int64_t k = x.size(-1);
  check_linear_weight(weight, k, op, "weight");
  const int64_t n = weight.size(0);
  if (bias.has_value()) check_vector(*bias, n, op, "bias");
  check_vector(norm_weight, n, op, "norm_weight");
  check_vector(norm_bias, n, op, "norm_bias");
  LinearNormArgs a{leading_rows(x), k, n, parse_norm(norm, op), with_last(x, n)};
  if (residual.has_value()) {
    check_f32(*residual, op, "residual");
    TORCH_CHECK(residual->sizes() == at::IntArrayRef(a.out_shape), "mbkernels_cpu::", op,
                ": residual must have shape ", at::IntArrayRef(a.out_shape),
                " (x's with the last dim out_features), got ", residual->sizes());
  }
  return a;
}

// ffn_stack's weight lists, checked against x's width and packed (through the cache).
struct FfnStackWeights {
  int64_t count, width, max_inter;
  gemm::Act act;
  gemm::Norm norm;
  std::vector<std::shared_ptr<const gemm::PackedWeights>> intermediate, output;
  std::vector<at::Tensor> norm_weight, norm_bias;  // contiguous
};

inline FfnStackWeights check_ffn_stack(const char* op, const at::Tensor& x, at::TensorList w1,
                                       at::TensorList b1, at::TensorList w2, at::TensorList b2,
                                       at::TensorList nw, at::TensorList nb, c10::string_view act,
                                       c10::string_view norm, at::ArrayRef<double> eps) {
  check_features_last(x, op);
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
  FfnStackWeights f{count, x.size(-1), 0, parse_act(act, op), parse_norm(norm, op), {}, {}, {}, {}};
  for (int64_t i = 0; i < count; ++i) {
    const auto item = [i](const char* list) { return std::string(list) + "[" + std::to_string(i) + "]"; };
    check_linear_weight(w1[i], f.width, op, item("intermediate_weights").c_str());
    const int64_t inter = w1[i].size(0);
    f.max_inter = std::max(f.max_inter, inter);
    check_vector(b1[i], inter, op, item("intermediate_biases").c_str());
    check_linear_weight(w2[i], inter, op, item("output_weights").c_str());
    TORCH_CHECK(w2[i].size(0) == f.width, "mbkernels_cpu::", op, ": output_weights[", i,
                "] must have shape [", f.width, ", ", inter, "], got ", w2[i].sizes());
    check_vector(b2[i], f.width, op, item("output_biases").c_str());
    check_vector(nw[i], f.width, op, item("norm_weights").c_str());
    check_vector(nb[i], f.width, op, item("norm_biases").c_str());
    f.intermediate.push_back(packed_weights(w1[i], &b1[i]));
    f.output.push_back(packed_weights(w2[i], &b2[i]));
    f.norm_weight.push_back(nw[i].contiguous());
    f.norm_bias.push_back(nb[i].contiguous());
  }
  return f;
}

}  // namespace mbk::torch_cpu
