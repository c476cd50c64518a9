// mbkernels_cpu::embedding_forward, embedding_forward_train and embedding_backward: the embedding
// op's fp32 forward (with its output dropout) and backward on csrc/core/ops/embedding.h, from
// input_ids or inputs_embeds, with or without the transformation Linear.
//
// The backward takes the pre-norm sum t Wᵀ + bias + position + type that the training forward
// kept, or recomputes it with the forward's core (Norm::none; the packed weights are still
// cached), which leaves the trigram rows t in its workspace for the weight gradient. The norm's
// backward and its column sums run on csrc/core's fused kernels (backward.h's norm_backward), the
// gradient GEMMs on ATen, and the lookups' gradients (position, type, word rows through the
// trigram concat) are csrc/core scatter-adds.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "args.h"
#include "backward.h"
#include "bottleneck_attention.h"
#include "ops/attention.h"
#include "ops/embedding.h"
#include "ops/norm.h"
#include "weight_cache.h"

namespace mbk::torch_cpu {
namespace {

// reference.embedding's dropout: the default stream.
constexpr uint32_t kStream = 0;

at::Tensor ids(const at::Tensor& t, int64_t batch, int64_t seq, const char* name, const char* op) {
  TORCH_CHECK(t.device().is_cpu() && !t.is_floating_point() && !t.is_complex() &&
                  t.scalar_type() != at::kBool,
              "mbkernels_cpu::", op, ": ", name, " must be an integer CPU tensor, got ",
              t.scalar_type(), " on ", t.device());
  TORCH_CHECK(t.dim() == 2 && t.size(0) == batch && t.size(1) == seq, "mbkernels_cpu::", op, ": ",
              name, " must have shape [", batch, ", ", seq, "], got ", t.sizes());
  return t.to(at::kLong).contiguous();
}

at::Tensor table(const at::Tensor& t, int64_t width, const char* name, const char* op) {
  check_f32(t, op, name);
  TORCH_CHECK(t.dim() == 2 && (width < 0 || t.size(1) == width), "mbkernels_cpu::", op, ": ",
              name, " must be [rows, ", width < 0 ? "width" : std::to_string(width), "], got ",
              t.sizes());
  return t.contiguous();
}

// One call's arguments checked, as the core's EmbeddingArgs (out left to the caller), with what
// keeps their memory alive.
struct Operands {
  at::Tensor in, embeds, types, pos, words, positions, type_table, nw, nb;
  std::shared_ptr<const gemm::PackedWeights> packed;
  int64_t rows = 0;
  ops::EmbeddingArgs a;
};

Operands operands(const std::optional<at::Tensor>& input_ids,
                  const std::optional<at::Tensor>& inputs_embeds, const at::Tensor& token_type_ids,
                  const at::Tensor& position_ids, const at::Tensor& word_embeddings,
                  const std::optional<at::Tensor>& transformation_weight,
                  const std::optional<at::Tensor>& transformation_bias,
                  const at::Tensor& position_embeddings, const at::Tensor& token_type_embeddings,
                  const at::Tensor& norm_weight, const at::Tensor& norm_bias, bool trigram,
                  c10::string_view norm, double eps, const char* op) {
  TORCH_CHECK(input_ids.has_value() != inputs_embeds.has_value(), "mbkernels_cpu::", op,
              ": expected exactly one of input_ids and inputs_embeds, got ",
              input_ids.has_value() ? "both" : "neither");
  TORCH_CHECK(token_type_ids.dim() == 2, "mbkernels_cpu::", op,
              ": token_type_ids must be [batch, seq], got ", token_type_ids.sizes());
  Operands o;
  const int64_t batch = token_type_ids.size(0), seq = token_type_ids.size(1);
  o.rows = batch * seq;
  o.words = table(word_embeddings, -1, "word_embeddings", op);
  int64_t e = o.words.size(1);
  if (input_ids.has_value()) {
    o.in = ids(*input_ids, batch, seq, "input_ids", op);
  } else {
    check_f32(*inputs_embeds, op, "inputs_embeds");
    TORCH_CHECK(inputs_embeds->dim() == 3 && inputs_embeds->size(0) == batch &&
                    inputs_embeds->size(1) == seq,
                "mbkernels_cpu::", op, ": inputs_embeds must be [", batch, ", ", seq,
                ", embedding_size], got ", inputs_embeds->sizes());
    o.embeds = inputs_embeds->contiguous();
    e = o.embeds.size(2);
  }
  o.types = ids(token_type_ids, batch, seq, "token_type_ids", op);
  o.pos = ids(position_ids, batch, seq, "position_ids", op);
  const int64_t width = trigram ? 3 * e : e;
  int64_t hidden = width;
  if (transformation_weight.has_value()) {
    check_linear_weight(*transformation_weight, width, op, "transformation_weight");
    hidden = transformation_weight->size(0);
    if (transformation_bias.has_value())
      check_vector(*transformation_bias, hidden, op, "transformation_bias");
    o.packed = packed_weights(*transformation_weight,
                              transformation_bias.has_value() ? &*transformation_bias : nullptr);
  } else {
    TORCH_CHECK(!transformation_bias.has_value(), "mbkernels_cpu::", op,
                ": transformation_bias must be None without a transformation_weight");
  }
  o.positions = table(position_embeddings, hidden, "position_embeddings", op);
  o.type_table = table(token_type_embeddings, hidden, "token_type_embeddings", op);
  check_vector(norm_weight, hidden, op, "norm_weight");
  check_vector(norm_bias, hidden, op, "norm_bias");
  o.nw = norm_weight.contiguous();
  o.nb = norm_bias.contiguous();
  ops::EmbeddingArgs& a = o.a;
  a.batch = batch;
  a.seq = seq;
  a.input_ids = o.in.defined() ? o.in.const_data_ptr<int64_t>() : nullptr;
  a.inputs_embeds = o.embeds.defined() ? o.embeds.const_data_ptr<float>() : nullptr;
  a.token_type_ids = o.types.const_data_ptr<int64_t>();
  a.position_ids = o.pos.const_data_ptr<int64_t>();
  a.word_embeddings = o.words.const_data_ptr<float>();
  a.vocab = o.words.size(0);
  a.embedding_size = e;
  a.trigram = trigram;
  a.transformation = o.packed.get();
  a.position_embeddings = o.positions.const_data_ptr<float>();
  a.max_positions = o.positions.size(0);
  a.token_type_embeddings = o.type_table.const_data_ptr<float>();
  a.type_vocab = o.type_table.size(0);
  a.hidden = hidden;
  a.norm = parse_norm(norm, op);
  a.norm_weight = o.nw.const_data_ptr<float>();
  a.norm_bias = o.nb.const_data_ptr<float>();
  a.eps = static_cast<float>(eps);
  a.ld_out = hidden;
  return o;
}

// The core's argument error as op's: an id out of range ("<ids> must be in [0, n)") is an
// IndexError, as in F.embedding; the rest are ValueErrors.
[[noreturn]] void rethrow(const char* op, const std::invalid_argument& err) {
  const std::string what = std::string(err.what()).substr(std::string("embedding_forward").size());
  TORCH_CHECK_INDEX(what.find("must be in [0, ") == std::string::npos, "mbkernels_cpu::", op,
                    what);
  TORCH_CHECK_VALUE(false, "mbkernels_cpu::", op, what);
}

// out [rows, hidden] = dropout(out) with the mask of reference.embedding's site.
void drop(at::Tensor& out, int64_t rows, const DropoutMask& mask) {
  if (mask.active && rows > 0)
    ops::dropout_rows(out.mutable_data_ptr<float>(), out.size(-1), rows, out.size(-1), mask, 0,
                      nullptr, 0, at::get_num_threads());
}

// The core forward into out [rows, hidden]; workspace as ops::embedding_forward takes it.
void run_forward(const char* op, ops::EmbeddingArgs a, at::Tensor& out, float* workspace) {
  a.out = out.mutable_data_ptr<float>();
  if (a.batch * a.seq == 0) return;
  try {
    ops::embedding_forward(a, at::get_num_threads(), workspace);
  } catch (const std::invalid_argument& err) {
    rethrow(op, err);
  }
}

at::Tensor embedding_forward(const std::optional<at::Tensor>& input_ids,
                             const std::optional<at::Tensor>& inputs_embeds,
                             const at::Tensor& token_type_ids, const at::Tensor& position_ids,
                             const at::Tensor& word_embeddings,
                             const std::optional<at::Tensor>& transformation_weight,
                             const std::optional<at::Tensor>& transformation_bias,
                             const at::Tensor& position_embeddings,
                             const at::Tensor& token_type_embeddings,
                             const at::Tensor& norm_weight, const at::Tensor& norm_bias,
                             bool trigram, c10::string_view norm, double eps, double dropout_p,
                             const std::optional<at::Tensor>& seed) {
  constexpr const char* op = "embedding_forward";
  const Operands o = operands(input_ids, inputs_embeds, token_type_ids, position_ids,
                              word_embeddings, transformation_weight, transformation_bias,
                              position_embeddings, token_type_embeddings, norm_weight, norm_bias,
                              trigram, norm, eps, op);
  const DropoutMask mask = dropout_of(dropout_p, seed, kStream, op);
  at::Tensor out = at::empty({o.a.batch, o.a.seq, o.a.hidden}, o.words.options());
  run_forward(op, o.a, out, nullptr);
  drop(out, o.rows, mask);
  return out;
}

// The training forward: (out, s) with s the pre-norm sum [B·S, hidden] that embedding_backward
// takes as `saved` instead of recomputing the GEMM; out = dropout(N(s)) on the standalone norm
// kernels (NoNorm: the same FMA on the rounded s as the fused epilogue; LayerNorm: the same row
// kernel), so it equals embedding_forward's output.
std::vector<at::Tensor> embedding_forward_train(
    const std::optional<at::Tensor>& input_ids, const std::optional<at::Tensor>& inputs_embeds,
    const at::Tensor& token_type_ids, const at::Tensor& position_ids,
    const at::Tensor& word_embeddings, const std::optional<at::Tensor>& transformation_weight,
    const std::optional<at::Tensor>& transformation_bias, const at::Tensor& position_embeddings,
    const at::Tensor& token_type_embeddings, const at::Tensor& norm_weight,
    const at::Tensor& norm_bias, bool trigram, c10::string_view norm, double eps,
    double dropout_p, const std::optional<at::Tensor>& seed) {
  constexpr const char* op = "embedding_forward_train";
  Operands o = operands(input_ids, inputs_embeds, token_type_ids, position_ids, word_embeddings,
                        transformation_weight, transformation_bias, position_embeddings,
                        token_type_embeddings, norm_weight, norm_bias, trigram, norm, eps, op);
  const DropoutMask mask = dropout_of(dropout_p, seed, kStream, op);
  const int64_t rows = o.rows, hidden = o.a.hidden;
  const gemm::Norm kind = o.a.norm;
  o.a.norm = gemm::Norm::none;
  at::Tensor s = at::empty({rows, hidden}, o.words.options());
  run_forward(op, o.a, s, nullptr);
  at::Tensor out = at::empty({o.a.batch, o.a.seq, hidden}, o.words.options());
  ops::norm_forward(kind, s.const_data_ptr<float>(), nullptr, o.a.norm_weight, o.a.norm_bias,
                    o.a.eps, out.mutable_data_ptr<float>(), rows, hidden, at::get_num_threads());
  drop(out, rows, mask);
  return {out, s};
}

// Gradients of every tensor argument of mbkernels::embedding in its order (input_ids,
// inputs_embeds, token_type_ids, position_ids, word_embeddings, transformation_weight,
// transformation_bias, position_embeddings, token_type_embeddings, norm_weight, norm_bias, seed);
// an empty tensor where none is needed or there is none (ids, seed, an absent Linear).
std::vector<at::Tensor> embedding_backward(
    const at::Tensor& grad, const std::optional<at::Tensor>& input_ids,
    const std::optional<at::Tensor>& inputs_embeds, const at::Tensor& token_type_ids,
    const at::Tensor& position_ids, const at::Tensor& word_embeddings,
    const std::optional<at::Tensor>& transformation_weight,
    const std::optional<at::Tensor>& transformation_bias, const at::Tensor& position_embeddings,
    const at::Tensor& token_type_embeddings, const at::Tensor& norm_weight,
    const at::Tensor& norm_bias, std::optional<int64_t> padding_idx, bool trigram,
    c10::string_view norm, double eps, double dropout_p, const std::optional<at::Tensor>& seed,
    const c10::List<bool>& needs, at::TensorList saved) {
  constexpr const char* op = "embedding_backward";
  Operands o = operands(input_ids, inputs_embeds, token_type_ids, position_ids, word_embeddings,
                        transformation_weight, transformation_bias, position_embeddings,
                        token_type_embeddings, norm_weight, norm_bias, trigram, norm, eps, op);
  ops::EmbeddingArgs& a = o.a;
  const int64_t rows = o.rows, hidden = a.hidden, e = a.embedding_size;
  check_grad(grad, {a.batch, a.seq, hidden}, op);
  check_needs(needs, 12, op);
  const DropoutMask mask = dropout_of(dropout_p, seed, kStream, op);
  int64_t skip = -1;  // the word row that gets no gradient (padding_idx, as in nn.Embedding)
  if (padding_idx.has_value() && input_ids.has_value()) {
    skip = *padding_idx;
    TORCH_CHECK(skip >= 0 && skip < a.vocab, "mbkernels_cpu::", op,
                ": padding_idx must be None or a row of word_embeddings in [0, ", a.vocab,
                "), got ", skip);
  }
  const auto opts = o.words.options();
  TORCH_CHECK(saved.size() <= 1, "mbkernels_cpu::", op,
              ": saved must be empty or hold the pre-norm sum [rows, hidden], got ", saved.size(),
              " tensors");
  // The pre-norm sum s = t Wᵀ + bias + position + type (saved, or recomputed leaving the trigram
  // rows t in x; with s saved, x is gathered again: a copy, no GEMM).
  const gemm::Norm kind = a.norm;
  a.norm = gemm::Norm::none;
  at::Tensor x = at::empty({rows, trigram ? 3 * e : e}, opts);
  at::Tensor s;
  if (!saved.empty()) {
    s = saved[0];
    check_f32(s, op, "saved");
    TORCH_CHECK(s.sizes() == at::IntArrayRef({rows, hidden}) && s.is_contiguous(),
                "mbkernels_cpu::", op, ": saved pre-norm sum must be contiguous [", rows, ", ",
                hidden, "], got ", s.sizes());
    // embedding_rows also checks the ids that the scatter-adds below index with.
    a.out = s.data_ptr<float>();  // not written: embedding_rows only checks it is there
    try {
      if (rows > 0) ops::embedding_rows(a, x.mutable_data_ptr<float>());
    } catch (const std::invalid_argument& err) {
      rethrow(op, err);
    }
  } else {
    s = at::empty({rows, hidden}, opts);
    run_forward(op, a, s, x.mutable_data_ptr<float>());
  }
  // The output's gradient through the dropout (the same mask), then the norm's.
  at::Tensor g = grad.reshape({rows, hidden});
  if (mask.active) {
    g = g.clone(at::MemoryFormat::Contiguous);
    if (rows > 0)
      ops::dropout_rows(g.mutable_data_ptr<float>(), hidden, rows, hidden, mask, 0, nullptr, 0,
                        at::get_num_threads());
  } else {
    g = g.contiguous();
  }
  at::Tensor gnw, gnb, gbias;
  const at::Tensor gs = norm_backward(kind, g, s, o.nw, eps, gnw, gnb, gbias);
  // A lookup's gradient: the rows of src summed into a zeroed table like `like` at `index`.
  const auto lookup_grad = [&](const at::Tensor& like, const at::Tensor& src,
                               const at::Tensor& index, int64_t skip_row) {
    at::Tensor out = at::zeros(like.sizes(), opts);
    ops::scatter_add_rows(src.const_data_ptr<float>(), src.size(1),
                          index.const_data_ptr<int64_t>(), rows, src.size(1), skip_row,
                          out.mutable_data_ptr<float>());
    return out;
  };
  std::vector<at::Tensor> out(12);
  if (needs.get(7)) out[7] = lookup_grad(o.positions, gs, o.pos, -1);
  if (needs.get(8)) out[8] = lookup_grad(o.type_table, gs, o.types, -1);
  if (needs.get(9)) out[9] = gnw;
  if (needs.get(10)) out[10] = gnb;
  const bool has_w = transformation_weight.has_value();
  if (has_w && needs.get(5)) out[5] = at::mm(gs.t(), x);
  if (transformation_bias.has_value() && needs.get(6)) out[6] = gbias;
  const bool to_words = input_ids.has_value() && needs.get(4);
  const bool to_embeds = !input_ids.has_value() && needs.get(1);
  if (to_words || to_embeds) {
    // dL/dt [rows, 3E or E], then through the trigram concat to dL/de [rows, E].
    const at::Tensor gx = has_w ? at::mm(gs, *transformation_weight) : gs;
    at::Tensor ge = gx;
    if (trigram) {
      ge = at::empty({rows, e}, opts);
      ops::trigram_backward(gx.const_data_ptr<float>(), rows, a.seq, e,
                            ge.mutable_data_ptr<float>());
    }
    if (to_embeds)
      out[1] = ge.view(inputs_embeds->sizes());
    else
      out[4] = lookup_grad(o.words, ge, o.in, skip);
  }
  // The table is unused beside inputs_embeds: its gradient is zero (as the reference's autograd,
  // and the registry's fake, give it).
  if (!input_ids.has_value() && needs.get(4)) out[4] = at::zeros(o.words.sizes(), opts);
  for (at::Tensor& t : out)
    if (!t.defined()) t = none_for(o.words);
  return out;
}

}  // namespace
}  // namespace mbk::torch_cpu

TORCH_LIBRARY_FRAGMENT(mbkernels_cpu, m) {
  m.def(
      "embedding_forward(Tensor? input_ids, Tensor? inputs_embeds, Tensor token_type_ids, "
      "Tensor position_ids, Tensor word_embeddings, Tensor? transformation_weight, "
      "Tensor? transformation_bias, Tensor position_embeddings, Tensor token_type_embeddings, "
      "Tensor norm_weight, Tensor norm_bias, bool trigram, str norm, float eps, float dropout_p, "
      "Tensor? seed) -> Tensor");
  m.def(
      "embedding_backward(Tensor grad, Tensor? input_ids, Tensor? inputs_embeds, "
      "Tensor token_type_ids, Tensor position_ids, Tensor word_embeddings, "
      "Tensor? transformation_weight, Tensor? transformation_bias, Tensor position_embeddings, "
      "Tensor token_type_embeddings, Tensor norm_weight, Tensor norm_bias, int? padding_idx, "
      "bool trigram, str norm, float eps, float dropout_p, Tensor? seed, bool[] needs, "
      "Tensor[] saved) -> Tensor[]");
  m.def(
      "embedding_forward_train(Tensor? input_ids, Tensor? inputs_embeds, Tensor token_type_ids, "
      "Tensor position_ids, Tensor word_embeddings, Tensor? transformation_weight, "
      "Tensor? transformation_bias, Tensor position_embeddings, Tensor token_type_embeddings, "
      "Tensor norm_weight, Tensor norm_bias, bool trigram, str norm, float eps, float dropout_p, "
      "Tensor? seed) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(mbkernels_cpu, CPU, m) {
  m.impl("embedding_forward", &mbk::torch_cpu::embedding_forward);
  m.impl("embedding_backward", &mbk::torch_cpu::embedding_backward);
  m.impl("embedding_forward_train", &mbk::torch_cpu::embedding_forward_train);
}
