// The private CPU backward ops of attention and bottleneck_attention (fp32, with dropout):
//
// - mbkernels_cpu::attention_backward: csrc/core/ops/attention.h's flash-style backward (P
//   recomputed per query block from q and k, the dropout mask from the seed, no B×H×S×S buffer).
// - mbkernels_cpu::bottleneck_attention_backward in two steps: `recompute` produces the forward's
//   intermediates (the projections before and after their norms, the context and the output
//   norm's input) on the packed-weight GEMMs (in training the forward's packings are still cached)
//   and the attention core; `backward` consumes them: the norm backwards with their column sums in
//   csrc/core (backward.h), the attention backward writing dQ, dK, dV straight into the layout of
//   the projection GEMMs' outputs, and the gradient GEMMs on ATen (one per stacked GEMM for the
//   input gradients). A caller that saved the intermediates can call `backward` alone.
//
// Both take `needs` (one flag per tensor argument of the forward) and return one gradient per
// tensor argument, an empty tensor where none is needed.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <vector>

#include "args.h"
#include "backward.h"
#include "bottleneck_attention.h"
#include "ops/attention.h"
#include "ops/bottleneck_attention.h"
#include "ops/norm.h"

namespace mbk::torch_cpu {
namespace {

// The gradient of the returned scores as contiguous [B, H, Sq, Sk], or undefined when it has none.
at::Tensor scores_grad(const std::optional<at::Tensor>& grad_scores, at::IntArrayRef shape,
                       const char* op) {
  if (!grad_scores.has_value() || grad_scores->numel() == 0) return at::Tensor();
  check_grad(*grad_scores, shape, op);
  return grad_scores->contiguous();
}

// Gradients of attention: (q, k, v, key_mask, seed).
std::vector<at::Tensor> attention_backward(const at::Tensor& grad_ctx,
                                           const std::optional<at::Tensor>& grad_scores,
                                           const at::Tensor& q, const at::Tensor& k,
                                           const at::Tensor& v,
                                           const std::optional<at::Tensor>& key_mask,
                                           double dropout_p, const std::optional<at::Tensor>& seed,
                                           const c10::List<bool>& needs) {
  constexpr const char* op = "attention_backward";
  const AttentionOperands o = attention_operands(q, k, v, key_mask, dropout_p, seed, op);
  check_grad(grad_ctx, q.sizes(), op);
  check_needs(needs, 5, op);
  const at::Tensor gc = unit_last(grad_ctx);
  const at::Tensor dsc = scores_grad(grad_scores, {q.size(0), q.size(1), q.size(2), k.size(2)}, op);
  at::Tensor dq = at::empty(q.sizes(), q.options()), dk = at::empty(k.sizes(), q.options()),
             dv = at::empty(v.sizes(), q.options());
  ops::AttentionGradArgs g;
  g.dctx = gc.const_data_ptr<float>();
  g.dctx_strides = head_strides(gc);
  g.dscores = dsc.defined() ? dsc.const_data_ptr<float>() : nullptr;
  g.dq = dq.mutable_data_ptr<float>();
  g.dq_strides = head_strides(dq);
  g.dk = dk.mutable_data_ptr<float>();
  g.dk_strides = head_strides(dk);
  g.dv = dv.mutable_data_ptr<float>();
  g.dv_strides = head_strides(dv);
  ops::attention_backward(o.args, g, at::get_num_threads());
  return {needs.get(0) ? dq : none_for(q), needs.get(1) ? dk : none_for(q),
          needs.get(2) ? dv : none_for(q), none_for(q), none_for(q)};
}

// The 18 weights' positions in the op's argument list (BottleneckAttentionTensors' order).
enum Weight : int {
  kInputW = 0, kInputB, kInputNormW, kInputNormB, kAttentionW, kAttentionB, kAttentionNormW,
  kAttentionNormB, kQueryW, kQueryB, kKeyW, kKeyB, kValueW, kValueB, kOutputW, kOutputB,
  kOutputNormW, kOutputNormB, kWeights
};

// One call's shapes, packed weights, mask and dropout.
struct Problem {
  PackedBottleneckAttention p;
  ops::ProjectionLayout L;
  at::Tensor h2;  // h as [rows, hidden] (contiguous)
  at::Tensor mask;
  ops::BottleneckAttentionDropout dropout;
  int64_t batch, seq, rows, width, na, nb;
  std::vector<const std::optional<at::Tensor>*> w;  // the 18 weight arguments
  bool has_b, has_s;                                // the normalized segments of A: b (0), s (1)
};

// The forward's intermediates, every one [rows, ·] contiguous.
struct Intermediates {
  at::Tensor a_pre;  // the GEMM over h with its bias, before any norm [rows, na]
  at::Tensor a;      // a_pre with its b (and s) segments normalized (a_pre itself in mode none)
  at::Tensor bmat;   // the GEMM over the bottleneck [rows, nb] (undefined when nb == 0)
  at::Tensor ctx;    // the attention context [rows, width] ([B, S, H·D])
  at::Tensor t_out;  // the output norm's input: dropout(ctx Woᵀ + bo) + residual [rows, width]
};

// The attention core's arguments over the projections in a and bmat.
ops::AttentionArgs attention_args(const Problem& pr, const Intermediates& im) {
  ops::AttentionArgs at;
  at.batch = pr.batch;
  at.heads = pr.p.weights.heads;
  at.seq_q = at.seq_k = pr.seq;
  at.head_dim = pr.width / at.heads;
  ops::set_projections(at, pr.L, im.a.const_data_ptr<float>(),
                       im.bmat.defined() ? im.bmat.const_data_ptr<float>() : nullptr, pr.width,
                       pr.seq);
  at.key_mask = pr.mask.defined() ? pr.mask.const_data_ptr<uint8_t>() : nullptr;
  at.mask_batch_stride = pr.seq;
  at.dropout = pr.dropout.attn;
  return at;
}

const at::Tensor& norm_weight_of(const Problem& pr, int segment) {
  return **pr.w[segment == 0 ? kInputNormW : kAttentionNormW];
}
const at::Tensor& norm_bias_of(const Problem& pr, int segment) {
  return **pr.w[segment == 0 ? kInputNormB : kAttentionNormB];
}

// y = N(x) for one normalized segment (x [rows, width], any row stride), as reference.norm.
at::Tensor normalized(const Problem& pr, const at::Tensor& x, int segment) {
  const at::Tensor& w = norm_weight_of(pr, segment);
  const at::Tensor& b = norm_bias_of(pr, segment);
  if (pr.p.weights.norm == gemm::Norm::nonorm) return at::addcmul(b, x, w);
  return at::layer_norm(x, {pr.width}, w, b, pr.p.weights.eps);
}

// One call's Problem: h and the mode's weights checked and packed, the mask, the dropout sites.
Problem make_problem(const at::Tensor& h, const std::optional<at::Tensor>& key_mask,
                     const BottleneckAttentionTensors& t, int64_t num_heads, c10::string_view mode,
                     c10::string_view norm, double eps, double attn_dropout_p,
                     double hidden_dropout_p, const std::optional<at::Tensor>& seed,
                     const char* op) {
  Problem pr;
  pr.p = pack_bottleneck_attention(h, t, num_heads, mode, norm, eps, op);
  pr.L = ops::projection_layout(pr.p.weights.mode);
  pr.batch = h.size(0);
  pr.seq = h.size(1);
  pr.rows = pr.batch * pr.seq;
  pr.width = pr.p.width;
  pr.na = pr.L.a_segments * pr.width;
  pr.nb = pr.L.b_segments * pr.width;
  pr.has_b = pr.L.residual_in_a;
  pr.has_s = pr.p.weights.mode == ops::AttentionMode::shared;
  pr.h2 = h.reshape({pr.rows, h.size(2)}).contiguous();
  pr.mask = key_mask_bytes(key_mask, pr.batch, pr.seq, op);
  pr.dropout = {dropout_of(attn_dropout_p, seed, kAttnStream, op),
                dropout_of(hidden_dropout_p, seed, kHiddenStream, op)};
  pr.w = t.all();
  return pr;
}

// The forward's intermediates on the packed GEMMs and the attention core (and the pre-softmax
// scores into `scores` [B, H, S, S] when not null).
Intermediates recompute(const Problem& pr, float* scores = nullptr) {
  const int threads = at::get_num_threads();
  const auto opts = pr.h2.options();
  const ops::BottleneckAttentionWeights& w = pr.p.weights;
  Intermediates im;
  im.a_pre = at::empty({pr.rows, pr.na}, opts);
  gemm::gemm(pr.h2.const_data_ptr<float>(), pr.h2.size(1), pr.rows, *w.over_h,
             im.a_pre.mutable_data_ptr<float>(), pr.na, gemm::Epilogue{}, threads);
  im.a = pr.has_b ? im.a_pre.clone() : im.a_pre;
  for (int seg = 0; seg < (pr.has_s ? 2 : pr.has_b ? 1 : 0); ++seg)
    im.a.narrow(1, seg * pr.width, pr.width)
        .copy_(normalized(pr, im.a_pre.narrow(1, seg * pr.width, pr.width), seg));
  if (pr.nb > 0) {
    im.bmat = at::empty({pr.rows, pr.nb}, opts);
    gemm::gemm(im.a.const_data_ptr<float>() + (pr.has_s ? pr.width : 0), pr.na, pr.rows,
               *w.over_bottleneck, im.bmat.mutable_data_ptr<float>(), pr.nb, gemm::Epilogue{},
               threads);
  }
  im.ctx = at::empty({pr.rows, pr.width}, opts);
  ops::AttentionArgs at = attention_args(pr, im);
  at.ctx = im.ctx.mutable_data_ptr<float>();
  at.ctx_strides = {pr.seq * pr.width, at.head_dim, pr.width};
  at.scores = scores;
  ops::attention_forward(at, threads);
  im.t_out = at::empty({pr.rows, pr.width}, opts);
  gemm::gemm(im.ctx.const_data_ptr<float>(), pr.width, pr.rows, *w.output,
             im.t_out.mutable_data_ptr<float>(), pr.width, gemm::Epilogue{}, threads);
  const at::Tensor& residual = pr.has_b ? im.a : pr.h2;
  ops::dropout_rows(im.t_out.mutable_data_ptr<float>(), pr.width, pr.rows, pr.width,
                    pr.dropout.hidden, 0, residual.const_data_ptr<float>(), residual.stride(0),
                    threads);
  return im;
}

// The intermediates as the training forward saved them: [a_pre (empty in mode none, where it is
// a), a, bmat (empty without a GEMM over the bottleneck), ctx, t_out]. Custom-op outputs may not
// alias each other, hence the empty stand-ins.
std::vector<at::Tensor> to_saved(const Problem& pr, const Intermediates& im) {
  const at::Tensor empty = at::empty({0}, pr.h2.options());
  return {pr.has_b ? im.a_pre : empty, im.a, im.bmat.defined() ? im.bmat : empty.clone(), im.ctx,
          im.t_out};
}

Intermediates from_saved(const Problem& pr, at::TensorList saved, const char* op) {
  TORCH_CHECK(saved.size() == 5, "mbkernels_cpu::", op,
              ": saved must be empty or the training forward's 5 tensors, got ", saved.size());
  const std::pair<int64_t, const char*> want[] = {
      {pr.has_b ? pr.na : 0, "a_pre"}, {pr.na, "a"}, {pr.nb, "bmat"}, {pr.width, "ctx"},
      {pr.width, "t_out"}};
  for (size_t i = 0; i < 5; ++i) {
    const at::Tensor& t = saved[i];
    const auto [cols, name] = want[i];
    check_f32(t, op, name);
    const bool ok = cols == 0 ? t.numel() == 0
                              : t.sizes() == at::IntArrayRef({pr.rows, cols}) && t.is_contiguous();
    TORCH_CHECK(ok, "mbkernels_cpu::", op, ": saved ", name, " must be contiguous [", pr.rows, ", ",
                cols, "], got ", t.sizes());
  }
  Intermediates im;
  im.a = saved[1];
  im.a_pre = pr.has_b ? saved[0] : im.a;
  if (pr.nb > 0) im.bmat = saved[2];
  im.ctx = saved[3];
  im.t_out = saved[4];
  return im;
}

// Gradients of the 18 weights and of h (h last) from the intermediates.
std::vector<at::Tensor> backward(const Problem& pr, const Intermediates& im, const at::Tensor& grad,
                                 const at::Tensor& dscores, const c10::List<bool>& needs) {
  const int threads = at::get_num_threads();
  const auto opts = pr.h2.options();
  const ops::BottleneckAttentionWeights& w = pr.p.weights;
  const int64_t width = pr.width;
  std::vector<at::Tensor> gw(kWeights + 1);
  const auto need = [&](int i) { return needs.get(2 + i) && pr.w[i]->has_value(); };
  const auto seg = [&](const at::Tensor& t, int64_t i) { return t.narrow(1, i * width, width); };

  // out = N(t_out), t_out = dropout(ctx Woᵀ + bo) + residual.
  at::Tensor g_onw, g_onb, g_bo;
  const at::Tensor gt = norm_backward(w.norm, grad, im.t_out, (*pr.w[kOutputNormW])->contiguous(),
                                      w.eps, g_onw, g_onb, g_bo);
  gw[kOutputNormW] = g_onw;
  gw[kOutputNormB] = g_onb;
  at::Tensor gy = gt;
  if (pr.dropout.hidden.active) {
    gy = gt.clone();
    ops::dropout_rows(gy.mutable_data_ptr<float>(), width, pr.rows, width, pr.dropout.hidden, 0,
                      nullptr, 0, threads);
    g_bo = gy.sum(0);
  }
  gw[kOutputB] = g_bo;
  const at::Tensor& wo = **pr.w[kOutputW];
  if (need(kOutputW)) gw[kOutputW] = at::mm(gy.t(), im.ctx);
  const at::Tensor gctx = at::mm(gy, wo);

  // Attention: dQ, dK, dV land in ga / gb at the projections' places.
  at::Tensor ga = at::empty({pr.rows, pr.na}, opts);
  at::Tensor gb = pr.nb > 0 ? at::empty({pr.rows, pr.nb}, opts) : at::Tensor();
  {
    const ops::AttentionArgs at = attention_args(pr, im);
    ops::AttentionArgs grads_at = at;  // the same layout, over the gradient buffers
    ops::set_projections(grads_at, pr.L, ga.const_data_ptr<float>(),
                         gb.defined() ? gb.const_data_ptr<float>() : nullptr, width, pr.seq);
    ops::AttentionGradArgs g;
    g.dctx = gctx.const_data_ptr<float>();
    g.dctx_strides = {pr.seq * width, at.head_dim, width};
    g.dscores = dscores.defined() ? dscores.const_data_ptr<float>() : nullptr;
    g.dq = const_cast<float*>(grads_at.q);
    g.dq_strides = grads_at.q_strides;
    g.dk = const_cast<float*>(grads_at.k);
    g.dk_strides = grads_at.k_strides;
    g.dv = const_cast<float*>(grads_at.v);
    g.dv_strides = grads_at.v_strides;
    ops::attention_backward(at, g, threads);
  }

  // The weight of each segment of A and B (A's first, then B's).
  std::vector<int> weight_of(pr.L.a_segments + pr.L.b_segments, -1);
  if (pr.has_b) weight_of[0] = kInputW;
  if (pr.has_s) weight_of[1] = kAttentionW;
  weight_of[pr.L.q] = kQueryW;
  weight_of[pr.L.k] = kKeyW;
  weight_of[pr.L.v] = kValueW;
  const auto stacked = [&](int first, int count) {
    std::vector<at::Tensor> ws;
    for (int i = first; i < first + count; ++i) ws.push_back(**pr.w[weight_of[i]]);
    return at::cat(ws, 0);
  };
  // Weight and bias gradients of a GEMM's segments [first, first + count) over input x.
  // One GEMM for the stacked weights' gradients (a wider product runs nearer the machine's peak
  // than one per weight), split into separate tensors (outputs may not alias each other). A
  // normalized segment's bias gradient comes from its norm's backward, already in gw.
  const auto linear_grads = [&](const at::Tensor& g, int first, int count, const at::Tensor& x) {
    bool any = false;
    for (int i = 0; i < count; ++i) any = any || need(weight_of[first + i]);
    const at::Tensor stacked_grad = any ? at::mm(g.t(), x) : at::Tensor();
    for (int i = 0; i < count; ++i) {
      const int wi = weight_of[first + i];
      if (need(wi)) gw[wi] = count == 1 ? stacked_grad : stacked_grad.narrow(0, i * width, width).clone();
      if (need(wi + 1) && !gw[wi + 1].defined()) gw[wi + 1] = seg(g, i).sum(0);
    }
  };

  // The GEMM over the bottleneck (its input: s in mode shared, b in mode bottleneck).
  at::Tensor g_src;
  if (pr.nb > 0) {
    const int first = static_cast<int>(pr.L.a_segments);
    linear_grads(gb, first, static_cast<int>(pr.L.b_segments), seg(im.a, pr.has_s ? 1 : 0));
    g_src = at::mm(gb, stacked(first, static_cast<int>(pr.L.b_segments)));
  }
  // The normalized segments of A: their norm's backward gives the pre-norm gradient in place.
  for (int s = 0; s < (pr.has_s ? 2 : pr.has_b ? 1 : 0); ++s) {
    at::Tensor g_norm;
    if (s == 0)
      g_norm = w.mode == ops::AttentionMode::bottleneck ? gt + g_src : gt;  // the residual b
    else
      g_norm = g_src;  // s feeds Q and K
    at::Tensor gnw, gnb, gbias;
    const at::Tensor g_pre = norm_backward(w.norm, g_norm.contiguous(), seg(im.a_pre, s).contiguous(),
                                           norm_weight_of(pr, s).contiguous(), w.eps, gnw, gnb, gbias);
    seg(ga, s).copy_(g_pre);
    gw[s == 0 ? kInputNormW : kAttentionNormW] = gnw;
    gw[s == 0 ? kInputNormB : kAttentionNormB] = gnb;
    gw[weight_of[s] + 1] = gbias;
  }
  linear_grads(ga, 0, static_cast<int>(pr.L.a_segments), pr.h2);
  if (needs.get(0)) {
    at::Tensor gh = at::mm(ga, stacked(0, static_cast<int>(pr.L.a_segments)));
    if (!pr.has_b) gh.add_(gt);  // mode none: the residual is h
    gw[kWeights] = gh;
  }
  return gw;
}

// Gradients of bottleneck_attention: (h, key_mask, the 18 weights, seed).
std::vector<at::Tensor> bottleneck_attention_backward(
    const at::Tensor& grad, const std::optional<at::Tensor>& grad_scores, const at::Tensor& h,
    const std::optional<at::Tensor>& key_mask, const std::optional<at::Tensor>& input_weight,
    const std::optional<at::Tensor>& input_bias, const std::optional<at::Tensor>& input_norm_weight,
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
    const std::optional<at::Tensor>& seed, const c10::List<bool>& needs, at::TensorList saved) {
  constexpr const char* op = "bottleneck_attention_backward";
  const BottleneckAttentionTensors t{
      input_weight,     input_bias,      input_norm_weight,     input_norm_bias,
      attention_weight, attention_bias,  attention_norm_weight, attention_norm_bias,
      query_weight,     query_bias,      key_weight,            key_bias,
      value_weight,     value_bias,      output_weight,         output_bias,
      output_norm_weight, output_norm_bias};
  const Problem pr = make_problem(h, key_mask, t, num_heads, mode, norm, eps, attn_dropout_p,
                                  hidden_dropout_p, seed, op);
  check_grad(grad, {pr.batch, pr.seq, pr.width}, op);
  check_needs(needs, 2 + kWeights + 1, op);
  const at::Tensor dscores =
      scores_grad(grad_scores, {pr.batch, num_heads, pr.seq, pr.seq}, op);
  std::vector<at::Tensor> out;
  if (pr.rows == 0 || pr.width == 0) {
    const auto opt_like = [&](const std::optional<at::Tensor>& x, bool n) {
      return n && x.has_value() ? at::zeros_like(*x) : none_for(h);
    };
    out.push_back(needs.get(0) ? at::zeros_like(h) : none_for(h));
    out.push_back(none_for(h));
    for (int i = 0; i < kWeights; ++i) out.push_back(opt_like(*pr.w[i], needs.get(2 + i)));
    out.push_back(none_for(h));
    return out;
  }
  const Intermediates im = saved.empty() ? recompute(pr) : from_saved(pr, saved, op);
  const std::vector<at::Tensor> gw =
      backward(pr, im, grad.reshape({pr.rows, pr.width}).contiguous(), dscores, needs);
  out.push_back(needs.get(0) ? gw[kWeights].view(h.sizes()) : none_for(h));
  out.push_back(none_for(h));  // key_mask
  for (int i = 0; i < kWeights; ++i)
    out.push_back(needs.get(2 + i) && pr.w[i]->has_value() && gw[i].defined() ? gw[i] : none_for(h));
  out.push_back(none_for(h));  // seed
  return out;
}

// The training forward: [out, scores (empty unless asked for), the saved intermediates...] —
// bottleneck_attention_backward takes the latter as `saved` instead of recomputing the forward.
// out = N(t_out) on the core's output norm (t_out already holds the dropout and the residual).
std::vector<at::Tensor> bottleneck_attention_forward_train(
    const at::Tensor& h, const std::optional<at::Tensor>& key_mask,
    const c10::List<std::optional<at::Tensor>>& weights, int64_t num_heads, c10::string_view mode,
    c10::string_view norm, double eps, double attn_dropout_p, double hidden_dropout_p,
    const std::optional<at::Tensor>& seed, bool return_scores) {
  constexpr const char* op = "bottleneck_attention_forward_train";
  TORCH_CHECK(weights.size() == kWeights, "mbkernels_cpu::", op, ": weights must hold the ",
              static_cast<int>(kWeights), " weight arguments of bottleneck_attention, got ",
              weights.size());
  const std::vector<std::optional<at::Tensor>> w(weights.begin(), weights.end());
  const BottleneckAttentionTensors t{w[0],  w[1],  w[2],  w[3],  w[4],  w[5],
                                     w[6],  w[7],  w[8],  w[9],  w[10], w[11],
                                     w[12], w[13], w[14], w[15], w[16], w[17]};
  const Problem pr = make_problem(h, key_mask, t, num_heads, mode, norm, eps, attn_dropout_p,
                                  hidden_dropout_p, seed, op);
  at::Tensor out = at::empty({pr.batch, pr.seq, pr.width}, h.options());
  at::Tensor scores = at::empty(return_scores ? at::IntArrayRef({pr.batch, num_heads, pr.seq, pr.seq})
                                              : at::IntArrayRef({0}),
                                h.options());
  Intermediates im;
  if (pr.rows == 0 || pr.width == 0) {
    im.a = at::empty({pr.rows, pr.na}, h.options());
    im.a_pre = pr.has_b ? at::empty({pr.rows, pr.na}, h.options()) : im.a;
    if (pr.nb > 0) im.bmat = at::empty({pr.rows, pr.nb}, h.options());
    im.ctx = at::empty({pr.rows, pr.width}, h.options());
    im.t_out = at::empty({pr.rows, pr.width}, h.options());
  } else {
    im = recompute(pr, return_scores ? scores.mutable_data_ptr<float>() : nullptr);
    out.view({pr.rows, pr.width}).copy_(im.t_out);
    const ops::BottleneckAttentionWeights& bw = pr.p.weights;
    ops::norm_forward(bw.norm, out.const_data_ptr<float>(), nullptr, bw.output_norm_weight,
                      bw.output_norm_bias, bw.eps, out.mutable_data_ptr<float>(), pr.rows,
                      pr.width, at::get_num_threads());
  }
  std::vector<at::Tensor> result{out, scores};
  for (at::Tensor& s : to_saved(pr, im)) result.push_back(std::move(s));
  return result;
}

}  // namespace
}  // namespace mbk::torch_cpu

TORCH_LIBRARY_FRAGMENT(mbkernels_cpu, m) {
  m.def(
      "attention_backward(Tensor grad_ctx, Tensor? grad_scores, Tensor q, Tensor k, Tensor v, "
      "Tensor? key_mask, float dropout_p, Tensor? seed, bool[] needs) -> Tensor[]");
  m.def(
      "bottleneck_attention_backward(Tensor grad, Tensor? grad_scores, Tensor h, Tensor? key_mask, "
      "Tensor? input_weight, Tensor? input_bias, Tensor? input_norm_weight, "
      "Tensor? input_norm_bias, Tensor? attention_weight, Tensor? attention_bias, "
      "Tensor? attention_norm_weight, Tensor? attention_norm_bias, Tensor? query_weight, "
      "Tensor? query_bias, Tensor? key_weight, Tensor? key_bias, Tensor? value_weight, "
      "Tensor? value_bias, Tensor? output_weight, Tensor? output_bias, "
      "Tensor? output_norm_weight, Tensor? output_norm_bias, int num_heads, str mode, str norm, "
      "float eps, float attn_dropout_p, float hidden_dropout_p, Tensor? seed, bool[] needs, "
      "Tensor[] saved) -> Tensor[]");
  m.def(
      "bottleneck_attention_forward_train(Tensor h, Tensor? key_mask, Tensor?[] weights, "
      "int num_heads, str mode, str norm, float eps, float attn_dropout_p, "
      "float hidden_dropout_p, Tensor? seed, bool return_scores) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(mbkernels_cpu, CPU, m) {
  m.impl("attention_backward", &mbk::torch_cpu::attention_backward);
  m.impl("bottleneck_attention_backward", &mbk::torch_cpu::bottleneck_attention_backward);
  m.impl("bottleneck_attention_forward_train",
         &mbk::torch_cpu::bottleneck_attention_forward_train);
}
