// embedding (ops/embedding.h): lookup (or inputs_embeds) → trigram concat → Linear → + position +
// token type → N → dropout, and the torch-free pieces of its backward (the trigram concat's
// backward and the lookups' scatter-adds). The norm's backward is _C.norm_backward, the gradient
// GEMMs are torch's: mbkernels/ops/embedding.py composes them.
//
// Every id tensor is [batch, seq] contiguous int64 (position_ids and token_type_ids included);
// the tables are contiguous float32. The ids' ranges were checked once, in Python
// (mbkernels/ops/_arguments.py).
#include "binding.h"
#include "dropout.h"
#include "ops/attention.h"
#include "ops/embedding.h"
#include "ops/norm.h"

namespace mbk::python {
namespace {

// reference.embedding's dropout: the default stream (mbkernels/ops/dropout.py).
constexpr uint32_t kStream = 0;

// The core's arguments from the ones every binding below takes first; `out` left to the caller.
ops::EmbeddingArgs args(Ptr input_ids, Ptr inputs_embeds, Ptr token_type_ids, Ptr position_ids,
                        int64_t batch, int64_t seq, Ptr word_embeddings, int64_t vocab,
                        int64_t embedding_size, bool trigram, const gemm::PackedWeights* transformation,
                        Ptr position_embeddings, int64_t max_positions, Ptr token_type_embeddings,
                        int64_t type_vocab, int64_t hidden) {
  ops::EmbeddingArgs a;
  a.batch = batch;
  a.seq = seq;
  a.input_ids = in<int64_t>(input_ids);
  a.inputs_embeds = in(inputs_embeds);
  a.token_type_ids = in<int64_t>(token_type_ids);
  a.position_ids = in<int64_t>(position_ids);
  a.word_embeddings = in(word_embeddings);
  a.vocab = vocab;
  a.embedding_size = embedding_size;
  a.trigram = trigram;
  a.transformation = transformation;
  a.position_embeddings = in(position_embeddings);
  a.max_positions = max_positions;
  a.token_type_embeddings = in(token_type_embeddings);
  a.type_vocab = type_vocab;
  a.hidden = hidden;
  a.ld_out = hidden;
  return a;
}

}  // namespace

void bind_embedding(py::module_& m) {
  // out [B·S, hidden] = dropout(N(t Wᵀ + bias + position + type)) (norm: nonorm | layernorm |
  // none, the pre-norm sum). pre_norm: 0, or [B·S, hidden] that keeps the pre-norm sum s (the
  // saving forward; out = N(s) on the standalone norm kernels then, equal to the fused epilogue's).
  // workspace: embedding_workspace_floats floats that receive the trigram rows t [B·S, 3E or E]
  // (the weight gradient's input), or 0 for a per-thread buffer.
  m.def(
      "embedding_forward",
      [](Ptr input_ids, Ptr inputs_embeds, Ptr token_type_ids, Ptr position_ids, int64_t batch,
         int64_t seq, Ptr word_embeddings, int64_t vocab, int64_t embedding_size, bool trigram,
         const gemm::PackedWeights* transformation, Ptr position_embeddings, int64_t max_positions,
         Ptr token_type_embeddings, int64_t type_vocab, int64_t hidden, const std::string& norm,
         Ptr norm_weight, Ptr norm_bias, float eps, double dropout_p, int64_t seed, Ptr y,
         Ptr pre_norm, Ptr workspace, int threads) {
        ops::EmbeddingArgs a = args(input_ids, inputs_embeds, token_type_ids, position_ids, batch, seq,
                                    word_embeddings, vocab, embedding_size, trigram, transformation,
                                    position_embeddings, max_positions, token_type_embeddings,
                                    type_vocab, hidden);
        const int64_t rows = batch * seq;
        if (rows == 0) return;
        const gemm::Norm kind = parse_norm(norm);
        a.norm = pre_norm != 0 ? gemm::Norm::none : kind;
        a.norm_weight = in(norm_weight);
        a.norm_bias = in(norm_bias);
        a.eps = eps;
        a.out = out(pre_norm != 0 ? pre_norm : y);
        ops::embedding_forward(a, threads, out(workspace));
        if (pre_norm != 0 && kind != gemm::Norm::none)
          ops::norm_forward(kind, in(pre_norm), nullptr, a.norm_weight, a.norm_bias, eps, out(y), rows,
                            hidden, threads);
        const DropoutMask mask = dropout_mask(dropout_p, seed, kStream);
        if (mask.active) dropout_rows(out(y), hidden, rows, hidden, mask, 0, nullptr, 0, threads);
      },
      py::arg("input_ids"), py::arg("inputs_embeds"), py::arg("token_type_ids"), py::arg("position_ids"),
      py::arg("batch"), py::arg("seq"), py::arg("word_embeddings"), py::arg("vocab"),
      py::arg("embedding_size"), py::arg("trigram"), py::arg("transformation").none(true),
      py::arg("position_embeddings"), py::arg("max_positions"), py::arg("token_type_embeddings"),
      py::arg("type_vocab"), py::arg("hidden"), py::arg("norm"), py::arg("norm_weight"),
      py::arg("norm_bias"), py::arg("eps"), py::arg("dropout_p"), py::arg("seed"), py::arg("y"),
      py::arg("pre_norm"), py::arg("workspace"), py::arg("threads"), nogil());
  // t [B·S, 3E or E] = the trigram rows alone (what embedding_forward leaves in its workspace), from
  // embedding_forward's first arguments: the weight gradient's input for a backward given the
  // saved pre-norm sum.
  m.def(
      "embedding_rows",
      [](Ptr input_ids, Ptr inputs_embeds, Ptr token_type_ids, Ptr position_ids, int64_t batch,
         int64_t seq, Ptr word_embeddings, int64_t vocab, int64_t embedding_size, bool trigram,
         const gemm::PackedWeights* transformation, Ptr position_embeddings, int64_t max_positions,
         Ptr token_type_embeddings, int64_t type_vocab, int64_t hidden, Ptr t) {
        ops::EmbeddingArgs a = args(input_ids, inputs_embeds, token_type_ids, position_ids, batch, seq,
                                    word_embeddings, vocab, embedding_size, trigram, transformation,
                                    position_embeddings, max_positions, token_type_embeddings,
                                    type_vocab, hidden);
        a.norm = gemm::Norm::none;
        a.out = out(t);  // not written: the core only checks that it is there
        if (batch * seq > 0) ops::embedding_rows(a, out(t));
      },
      py::arg("input_ids"), py::arg("inputs_embeds"), py::arg("token_type_ids"), py::arg("position_ids"),
      py::arg("batch"), py::arg("seq"), py::arg("word_embeddings"), py::arg("vocab"),
      py::arg("embedding_size"), py::arg("trigram"), py::arg("transformation").none(true),
      py::arg("position_embeddings"), py::arg("max_positions"), py::arg("token_type_embeddings"),
      py::arg("type_vocab"), py::arg("hidden"), py::arg("t"), nogil());
  // de [B·S, E] = the trigram concat's backward of dt [B·S, 3E] (both contiguous).
  m.def(
      "trigram_backward",
      [](Ptr dt, int64_t rows, int64_t seq, int64_t e, Ptr de) {
        ops::trigram_backward(in(dt), rows, seq, e, out(de));
      },
      py::arg("dt"), py::arg("rows"), py::arg("seq"), py::arg("e"), py::arg("de"), nogil());
  // out[index[r]] += src[r] (row stride ld_src) for r < rows, index[r] != skip (-1: none); out [*,
  // cols] contiguous. Serial in r: repeated indices sum in row order, the same on every run.
  m.def(
      "scatter_add_rows",
      [](Ptr src, int64_t ld_src, Ptr index, int64_t rows, int64_t cols, int64_t skip, Ptr dst) {
        ops::scatter_add_rows(in(src), ld_src, in<int64_t>(index), rows, cols, skip, out(dst));
      },
      py::arg("src"), py::arg("ld_src"), py::arg("index"), py::arg("rows"), py::arg("cols"),
      py::arg("skip"), py::arg("out"), nogil());
}

}  // namespace mbk::python
