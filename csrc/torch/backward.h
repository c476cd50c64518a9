// Pieces of the CPU backward ops (backward.cpp) that other ops' backwards reuse
// (attention_backward.cpp).
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/List.h>

#include "gemm/gemm.h"

namespace mbk::torch_cpu {

// grad is fp32 with the output's shape (errors name op).
void check_grad(const at::Tensor& grad, at::IntArrayRef shape, const char* op);
// needs has one flag per tensor argument.
void check_needs(const c10::List<bool>& needs, size_t count, const char* op);
// The empty tensor standing for "no gradient".
at::Tensor none_for(const at::Tensor& like);

// t [rows, n] (contiguous) is the norm's input; g = dL/d norm(t). Returns gt = dL/dt and fills gw,
// gb (the norm parameters' gradients) and gsum = sum_rows gt (the gradient of a bias added before
// the norm), all through csrc/core's fused kernels.
at::Tensor norm_backward(gemm::Norm norm, const at::Tensor& g, const at::Tensor& t,
                         const at::Tensor& w, double eps, at::Tensor& gw, at::Tensor& gb,
                         at::Tensor& gsum);

}  // namespace mbk::torch_cpu
