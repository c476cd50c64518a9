// attention (ops/attention.h): softmax(QKᵀ/√D + mask) V over [B, H, S, D] operands given by pointer
// and (batch, head, row) strides (the head dimension contiguous), the probabilities' dropout from
// the seed's counter-based mask; the backward recomputes P per query block (no B×H×S×S buffer).
#include <array>

#include "binding.h"
#include "dropout.h"
#include "ops/attention.h"

namespace mbk::python {
namespace {

using Strides = std::array<int64_t, 3>;  // batch, head, row

ops::HeadStrides strides(const Strides& s) { return {s[0], s[1], s[2]}; }

// The dropout streams of mbkernels/ops/dropout.py: attention probabilities 0, hidden 1.
constexpr uint32_t kAttnStream = 0;

ops::AttentionArgs args(Ptr q, Strides qs, Ptr k, Strides ks, Ptr v, Strides vs, int64_t batch,
                        int64_t heads, int64_t seq_q, int64_t seq_k, int64_t head_dim, Ptr key_mask,
                        double dropout_p, int64_t seed) {
  ops::AttentionArgs a;
  a.batch = batch;
  a.heads = heads;
  a.seq_q = seq_q;
  a.seq_k = seq_k;
  a.head_dim = head_dim;
  a.q = in(q);
  a.q_strides = strides(qs);
  a.k = in(k);
  a.k_strides = strides(ks);
  a.v = in(v);
  a.v_strides = strides(vs);
  a.key_mask = in<uint8_t>(key_mask);
  a.mask_batch_stride = seq_k;
  a.dropout = dropout_mask(dropout_p, seed, kAttnStream);
  return a;
}

}  // namespace

void bind_attention(py::module_& m) {
  m.def(
      "attention_forward",
      [](Ptr q, Strides qs, Ptr k, Strides ks, Ptr v, Strides vs, int64_t batch, int64_t heads,
         int64_t seq_q, int64_t seq_k, int64_t head_dim, Ptr key_mask, double dropout_p, int64_t seed,
         Ptr ctx, Strides ctx_strides, Ptr scores, int threads) {
        ops::AttentionArgs a = args(q, qs, k, ks, v, vs, batch, heads, seq_q, seq_k, head_dim, key_mask,
                                    dropout_p, seed);
        a.ctx = out(ctx);
        a.ctx_strides = strides(ctx_strides);
        a.scores = out(scores);
        ops::attention_forward(a, threads);
      },
      py::arg("q"), py::arg("q_strides"), py::arg("k"), py::arg("k_strides"), py::arg("v"),
      py::arg("v_strides"), py::arg("batch"), py::arg("heads"), py::arg("seq_q"), py::arg("seq_k"),
      py::arg("head_dim"), py::arg("key_mask"), py::arg("dropout_p"), py::arg("seed"), py::arg("ctx"),
      py::arg("ctx_strides"), py::arg("scores"), py::arg("threads"), nogil());
  // dscores: the returned scores' gradient [B, H, Sq, Sk] contiguous, or 0.
  m.def(
      "attention_backward",
      [](Ptr q, Strides qs, Ptr k, Strides ks, Ptr v, Strides vs, int64_t batch, int64_t heads,
         int64_t seq_q, int64_t seq_k, int64_t head_dim, Ptr key_mask, double dropout_p, int64_t seed,
         Ptr dctx, Strides dctx_strides, Ptr dscores, Ptr dq, Strides dq_strides, Ptr dk,
         Strides dk_strides, Ptr dv, Strides dv_strides, int threads) {
        const ops::AttentionArgs a = args(q, qs, k, ks, v, vs, batch, heads, seq_q, seq_k, head_dim,
                                          key_mask, dropout_p, seed);
        ops::AttentionGradArgs g;
        g.dctx = in(dctx);
        g.dctx_strides = strides(dctx_strides);
        g.dscores = in(dscores);
        g.dq = out(dq);
        g.dq_strides = strides(dq_strides);
        g.dk = out(dk);
        g.dk_strides = strides(dk_strides);
        g.dv = out(dv);
        g.dv_strides = strides(dv_strides);
        ops::attention_backward(a, g, threads);
      },
      py::arg("q"), py::arg("q_strides"), py::arg("k"), py::arg("k_strides"), py::arg("v"),
      py::arg("v_strides"), py::arg("batch"), py::arg("heads"), py::arg("seq_q"), py::arg("seq_k"),
      py::arg("head_dim"), py::arg("key_mask"), py::arg("dropout_p"), py::arg("seed"), py::arg("dctx"),
      py::arg("dctx_strides"), py::arg("dscores"), py::arg("dq"), py::arg("dq_strides"), py::arg("dk"),
      py::arg("dk_strides"), py::arg("dv"), py::arg("dv_strides"), py::arg("threads"), nogil());
  // x [rows, cols] (row stride ldx) = dropout(x) [+ residual]: the hidden and embedding dropout
  // sites (stream as in mbkernels/ops/dropout.py; element (r, c) of the site is index r·cols + c).
  m.def(
      "dropout_rows",
      [](Ptr x, int64_t ldx, int64_t rows, int64_t cols, double p, int64_t seed, int stream, Ptr residual,
         int64_t ld_residual, int threads) {
        dropout_rows(out(x), ldx, rows, cols, p, seed, static_cast<uint32_t>(stream), in(residual),
                     ld_residual, threads);
      },
      py::arg("x"), py::arg("ldx"), py::arg("rows"), py::arg("cols"), py::arg("p"), py::arg("seed"),
      py::arg("stream"), py::arg("residual"), py::arg("ld_residual"), py::arg("threads"), nogil());
}

}  // namespace mbk::python
