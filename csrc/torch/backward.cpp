// The private CPU backward ops of the packed-weight GEMM ops (fp32, no dropout): linear_norm and
// ffn_stack. The forward is recomputed with the packed-weight GEMM (in training the weights
// packed by the forward are still in the cache: the optimizer has not stepped yet), the
// elementwise parts and the bias / norm-parameter column sums run fused in csrc/core
// (gemm/epilogue_backward.h, ops/nonorm.h), and the gradient GEMMs are ATen matmuls.
//
// Both take `needs` (one flag per tensor argument, in argument order, lists expanded) and return
// one gradient per tensor argument in that order, an empty tensor where none is needed.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <optional>
#include <vector>

#include "args.h"
#include "backward.h"
#include "cpu.h"
#include "gemm/epilogue_backward.h"
#include "ops/nonorm.h"

namespace mbk::torch_cpu {

// check_grad, check_needs, none_for and norm_backward: declared in backward.h (bottleneck_attention's
// backward uses them too).
void check_grad(const at::Tensor& grad, at::IntArrayRef shape, const char* op) {
  check_f32(grad, op, "grad");
  TORCH_CHECK(grad.sizes() == shape, "mbkernels_cpu::", op, ": grad must have the output's shape ",
              shape, ", got ", grad.sizes());
}

void check_needs(const c10::List<bool>& needs, size_t count, const char* op) {
  TORCH_CHECK(needs.size() == count, "mbkernels_cpu::", op, ": needs must have ", count,
              " entries (one per tensor argument), got ", needs.size());
}

at::Tensor none_for(const at::Tensor& like) { return at::empty({0}, like.options()); }

// t [rows, n] is the norm's input; g = dL/d norm(t). Returns gt = dL/dt and fills gw, gb (the
// norm parameters' gradients) and gsum = sum_rows gt (the gradient of a bias added before the
// norm), all through csrc/core's fused kernels.
at::Tensor norm_backward(gemm::Norm norm, const at::Tensor& g, const at::Tensor& t,
                         const at::Tensor& w, double eps, at::Tensor& gw, at::Tensor& gb,
                         at::Tensor& gsum) {
  const int64_t rows = t.size(0), n = t.size(1);
  at::Tensor gt = at::empty({rows, n}, t.options());
  gw = at::empty({n}, t.options());
  gb = at::empty({n}, t.options());
  const int threads = at::get_num_threads();
  if (norm == gemm::Norm::nonorm) {
    mbk::ops::nonorm_backward(g.const_data_ptr<float>(), t.const_data_ptr<float>(), nullptr,
                              w.const_data_ptr<float>(), gt.mutable_data_ptr<float>(),
                              gw.mutable_data_ptr<float>(), gb.mutable_data_ptr<float>(), rows, n,
                              threads);
    gsum = gb * w;  // sum_rows g * w = w * sum_rows g
  } else {
    gsum = at::empty({n}, t.options());
    gemm::layernorm_backward(g.const_data_ptr<float>(), t.const_data_ptr<float>(),
                             w.const_data_ptr<float>(), static_cast<float>(eps),
                             gt.mutable_data_ptr<float>(), gw.mutable_data_ptr<float>(),
                             gb.mutable_data_ptr<float>(), gsum.mutable_data_ptr<float>(), rows, n,
                             active_isa(), threads);
  }
  return gt;
}

namespace {

// y = act(a Wᵀ + bias) [+ residual] on the packed-weight GEMM, no norm (y: rows with unit column
// stride): the forward's intermediates and pre-norm values, recomputed.
void linear(const at::Tensor& a, int64_t lda, const gemm::PackedWeights& w, at::Tensor& y,
            const float* residual = nullptr, int64_t ld_residual = 0,
            gemm::Act act = gemm::Act::none) {
  gemm::Epilogue ep;
  ep.act = act;
  ep.residual = residual;
  ep.ld_residual = ld_residual;
  gemm::gemm(a.const_data_ptr<float>(), lda, y.size(0), w, y.mutable_data_ptr<float>(),
             y.stride(0), ep, at::get_num_threads());
}

// Gradients of linear_norm: (x, weight, bias, norm_weight, norm_bias, residual). `saved` holds the
// pre-norm t that linear_norm_forward_train kept, or is empty (t is recomputed).
std::vector<at::Tensor> linear_norm_backward(const at::Tensor& grad, const at::Tensor& x,
                                             const at::Tensor& weight,
                                             const std::optional<at::Tensor>& bias,
                                             const at::Tensor& norm_weight,
                                             const at::Tensor& norm_bias,
                                             const std::optional<at::Tensor>& residual,
                                             c10::string_view norm, double eps,
                                             const c10::List<bool>& needs, at::TensorList saved) {
  constexpr const char* op = "linear_norm_backward";
  const LinearNormArgs a =
      check_linear_norm(op, x, weight, bias, norm_weight, norm_bias, residual, norm);
  check_grad(grad, a.out_shape, op);
  check_needs(needs, 6, op);
  const auto [xv, ldx] = as_rows(x, a.rows, a.k);
  const at::Tensor g = grad.reshape({a.rows, a.n}).contiguous();
  TORCH_CHECK(saved.size() <= 1, "mbkernels_cpu::", op,
              ": saved must be empty or hold the pre-norm [rows, N], got ", saved.size(), " tensors");
  at::Tensor t;
  if (!saved.empty()) {
    t = saved[0];
    check_f32(t, op, "saved");
    TORCH_CHECK(t.sizes() == at::IntArrayRef({a.rows, a.n}) && t.is_contiguous(), "mbkernels_cpu::",
                op, ": saved pre-norm must be contiguous [", a.rows, ", ", a.n, "], got ", t.sizes());
  } else {
    t = at::empty({a.rows, a.n}, x.options());
    at::Tensor rv;
    int64_t ldr = 0;
    if (residual.has_value()) std::tie(rv, ldr) = as_rows(*residual, a.rows, a.n);
    if (a.rows > 0 && a.n > 0)
      linear(xv, ldx, *packed_weights(weight, bias.has_value() ? &*bias : nullptr), t,
             residual.has_value() ? rv.const_data_ptr<float>() : nullptr, ldr);
  }
  at::Tensor gnw, gnb, gbias;
  const at::Tensor gt =
      norm_backward(a.norm, g, t, norm_weight.contiguous(), eps, gnw, gnb, gbias);
  std::vector<at::Tensor> out;
  out.push_back(needs.get(0) ? at::mm(gt, weight).view(x.sizes()) : none_for(x));
  out.push_back(needs.get(1) ? at::mm(gt.t(), xv) : none_for(x));
  out.push_back(needs.get(2) && bias.has_value() ? gbias : none_for(x));
  out.push_back(needs.get(3) ? gnw : none_for(x));
  out.push_back(needs.get(4) ? gnb : none_for(x));
  out.push_back(needs.get(5) && residual.has_value() ? gt.view(a.out_shape) : none_for(x));
  return out;
}

// Gradients of ffn_stack: (x, W1[0..n), b1[..], W2[..], b2[..], norm_weights[..], norm_biases[..]).
// `saved` is what ffn_stack_forward_train kept ([inputs of FFNs 1.., activations, pre-norm sums]),
// or empty: then the forward is recomputed first, keeping each FFN's input x_i and pre-norm t_i
// ([rows, width] each) and, for ReLU, its activations.
std::vector<at::Tensor> ffn_stack_backward(const at::Tensor& grad, const at::Tensor& x,
                                           at::TensorList w1, at::TensorList b1,
                                           at::TensorList w2, at::TensorList b2,
                                           at::TensorList nw, at::TensorList nb,
                                           c10::string_view act, c10::string_view norm,
                                           at::ArrayRef<double> eps, const c10::List<bool>& needs,
                                           at::TensorList saved) {
  constexpr const char* op = "ffn_stack_backward";
  const FfnStackWeights f = check_ffn_stack(op, x, w1, b1, w2, b2, nw, nb, act, norm, eps);
  check_grad(grad, x.sizes(), op);
  const int64_t n = f.count, rows = leading_rows(x), width = f.width;
  check_needs(needs, static_cast<size_t>(1 + 6 * n), op);
  const int threads = at::get_num_threads();
  const auto opts = x.options();
  // xs[i] is FFN i's input, ts[i] its pre-norm output act(x W1ᵀ + b1) W2ᵀ + b2 + x, hs[i] (ReLU)
  // its activations act(x W1ᵀ + b1): relu'(u) is h > 0, sparing the reverse pass n GEMMs.
  std::vector<at::Tensor> xs(n), ts(n), hs(n);
  xs[0] = x.reshape({rows, width});
  bool keep_h = f.act == gemm::Act::relu;
  for (int64_t i = 0; i < n; ++i) keep_h = keep_h && w1[i].size(0) == f.max_inter;
  if (!saved.empty()) {
    const std::pair<std::vector<int64_t>, const char*> shapes[] = {
        {{n - 1, rows, width}, "inputs"}, {{n, rows, f.max_inter}, "activations"},
        {{n, rows, width}, "pre-norm sums"}};
    TORCH_CHECK(saved.size() == 3 && keep_h, "mbkernels_cpu::", op,
                ": saved must be empty or ffn_stack_forward_train's 3 tensors (ReLU, one "
                "intermediate width), got ", saved.size());
    for (size_t j = 0; j < 3; ++j) {
      check_f32(saved[j], op, "saved");
      TORCH_CHECK(saved[j].sizes() == at::IntArrayRef(shapes[j].first) && saved[j].is_contiguous(),
                  "mbkernels_cpu::", op, ": saved ", shapes[j].second, " must be contiguous ",
                  at::IntArrayRef(shapes[j].first), ", got ", saved[j].sizes());
    }
    for (int64_t i = 0; i < n; ++i) {
      if (i > 0) xs[i] = saved[0][i - 1];
      hs[i] = saved[1][i];
      ts[i] = saved[2][i];
    }
  } else {
    const at::Tensor xbuf = at::empty({n, rows, width}, opts),
                     tbuf = at::empty({n, rows, width}, opts),
                     hbuf = at::empty({keep_h ? n : 1, rows, f.max_inter}, opts);
    xs[0] = xbuf[0].copy_(xs[0]);
    for (int64_t i = 0; i < n; ++i) {
      if (i > 0) xs[i] = xbuf[i];
      ts[i] = tbuf[i];
      hs[i] = hbuf[keep_h ? i : 0].narrow(1, 0, w1[i].size(0));
    }
    for (int64_t i = 0; i < n && rows > 0 && width > 0; ++i) {
      linear(xs[i], width, *f.intermediate[i], hs[i], nullptr, 0, f.act);
      linear(hs[i], f.max_inter, *f.output[i], ts[i], xs[i].const_data_ptr<float>(), width);
      if (i + 1 == n) break;
      if (f.norm == gemm::Norm::nonorm)
        mbk::ops::nonorm_forward(ts[i].const_data_ptr<float>(), nullptr,
                                 f.norm_weight[i].const_data_ptr<float>(),
                                 f.norm_bias[i].const_data_ptr<float>(),
                                 xs[i + 1].mutable_data_ptr<float>(), rows, width, threads);
      else
        xs[i + 1].copy_(at::layer_norm(ts[i], {width}, f.norm_weight[i], f.norm_bias[i], eps[i]));
    }
  }
  // Reverse: per FFN, the norm's backward, then the recomputed intermediate u = x W1ᵀ + b1, the
  // activation's backward (which turns u into act(u) for W2's gradient) and the gradient GEMMs.
  std::vector<at::Tensor> gw1(n), gb1(n), gw2(n), gb2(n), gnw(n), gnb(n);
  at::Tensor g = grad.reshape({rows, width}).contiguous();
  for (int64_t i = n - 1; i >= 0; --i) {
    const int64_t inter = w1[i].size(0);
    const at::Tensor gt =
        norm_backward(f.norm, g, ts[i], f.norm_weight[i], eps[i], gnw[i], gnb[i], gb2[i]);
    at::Tensor u = keep_h ? hs[i] : at::empty({rows, inter}, opts);
    if (!keep_h && rows > 0 && width > 0) linear(xs[i], width, *f.intermediate[i], u);
    const at::Tensor gh = at::mm(gt, w2[i]);
    at::Tensor gu = at::empty({rows, inter}, opts);
    gb1[i] = at::empty({inter}, opts);
    gemm::activation_backward(f.act, u.mutable_data_ptr<float>(), gh.const_data_ptr<float>(),
                              gu.mutable_data_ptr<float>(), gb1[i].mutable_data_ptr<float>(),
                              rows, inter, active_isa(), threads);
    const int64_t k = 1 + i;  // the flag index of W1[i]; the lists follow at strides of n
    if (needs.get(k + 2 * n)) gw2[i] = at::mm(gt.t(), u);
    if (needs.get(k)) gw1[i] = at::mm(gu.t(), xs[i]);
    // The path through W1 plus the residual path, in autograd's order (a product, then the sum):
    // with few tokens the weight gradients of earlier FFNs amplify the rounding of this sum
    // (rows of W1's gradient cancel), and addmm's different rounding measured up to 7x further
    // from float64 than fp32 autograd is; the same order keeps them on a par.
    g = at::mm(gu, w1[i]).add_(gt);
  }
  std::vector<at::Tensor> out;
  out.push_back(needs.get(0) ? g.view(x.sizes()) : none_for(x));
  const std::vector<at::Tensor>* lists[] = {&gw1, &gb1, &gw2, &gb2, &gnw, &gnb};
  for (int64_t l = 0; l < 6; ++l)
    for (int64_t i = 0; i < n; ++i) {
      const at::Tensor& t = (*lists[l])[i];
      out.push_back(needs.get(1 + l * n + i) && t.defined() ? t : none_for(x));
    }
  return out;
}

}  // namespace
}  // namespace mbk::torch_cpu

TORCH_LIBRARY_FRAGMENT(mbkernels_cpu, m) {
  m.def(
      "linear_norm_backward(Tensor grad, Tensor x, Tensor weight, Tensor? bias, "
      "Tensor norm_weight, Tensor norm_bias, Tensor? residual, str norm, float eps, "
      "bool[] needs, Tensor[] saved) -> Tensor[]");
  m.def(
      "ffn_stack_backward(Tensor grad, Tensor x, Tensor[] intermediate_weights, "
      "Tensor[] intermediate_biases, Tensor[] output_weights, Tensor[] output_biases, "
      "Tensor[] norm_weights, Tensor[] norm_biases, str act, str norm, float[] eps, "
      "bool[] needs, Tensor[] saved) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(mbkernels_cpu, CPU, m) {
  m.impl("linear_norm_backward", &mbk::torch_cpu::linear_norm_backward);
  m.impl("ffn_stack_backward", &mbk::torch_cpu::ffn_stack_backward);
}
