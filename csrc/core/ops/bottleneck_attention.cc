#include "ops/bottleneck_attention.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>

#include "gemm/gemm_kernels.h"
#include "ops/attention.h"
#include "ops/linear_norm.h"
#include "ops/norm.h"
#include "scratch.h"

namespace mbk::ops {
namespace {

int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }

struct Sizes {
  int64_t rows, hidden, width, head_dim;
  ProjectionLayout L;
};

Sizes check(const BottleneckAttentionWeights& w, int64_t batch, int64_t seq) {
  const auto fail = [](const std::string& what) {
    throw std::invalid_argument("bottleneck_attention_forward: " + what);
  };
  if (w.over_h == nullptr || w.output == nullptr) fail("over_h and output weights must not be null");
  if (batch < 0 || seq < 0) fail("batch and seq must be >= 0");
  if (w.heads < 1) fail("heads must be >= 1, got " + std::to_string(w.heads));
  if (w.norm == gemm::Norm::none) fail("norm must be nonorm or layernorm");
  const ProjectionLayout L = projection_layout(w.mode);
  const int64_t width = w.output->n(), hidden = w.over_h->k();
  if (w.output->k() != width)
    fail("output weight must be [width, width], got [" + std::to_string(width) + ", " +
         std::to_string(w.output->k()) + "]");
  if (width % w.heads != 0)
    fail("width " + std::to_string(width) + " is not a multiple of heads " + std::to_string(w.heads));
  if (w.over_h->n() != L.a_segments * width)
    fail("over_h must stack " + std::to_string(L.a_segments) + " projections of width " +
         std::to_string(width) + ", got " + std::to_string(w.over_h->n()) + " outputs");
  if (L.b_segments > 0) {
    if (w.over_bottleneck == nullptr) fail("over_bottleneck must not be null in this mode");
    if (w.over_bottleneck->k() != width || w.over_bottleneck->n() != L.b_segments * width)
      fail("over_bottleneck must be [" + std::to_string(L.b_segments * width) + ", " +
           std::to_string(width) + "]");
    if (w.over_bottleneck->isa() != w.over_h->isa()) fail("weights packed for different ISAs");
  }
  if (!L.residual_in_a && hidden != width)
    fail("mode none needs width == hidden, got " + std::to_string(width) + " and " + std::to_string(hidden));
  if (w.output->isa() != w.over_h->isa()) fail("weights packed for different ISAs");
  return {batch * seq, hidden, width, width / w.heads, L};
}

AttentionArgs attention_args(const Sizes& s, int64_t batch, int64_t seq, int64_t heads) {
  AttentionArgs a;
  a.batch = batch;
  a.heads = heads;
  a.seq_q = a.seq_k = seq;
  a.head_dim = s.head_dim;
  return a;
}

}  // namespace

ProjectionLayout projection_layout(AttentionMode mode) {
  switch (mode) {
    case AttentionMode::shared: return {3, 2, 3, 4, 2, true};      // A [b|s|V], B [Q|K] from s
    case AttentionMode::bottleneck: return {1, 3, 1, 2, 3, true};  // A [b], B [Q|K|V] from b
    case AttentionMode::full: return {4, 0, 1, 2, 3, true};        // A [b|Q|K|V]
    case AttentionMode::none: return {3, 0, 0, 1, 2, false};       // A [Q|K|V]
  }
  throw std::invalid_argument("bottleneck_attention_forward: unknown mode");
}

void set_projections(AttentionArgs& at, const ProjectionLayout& L, const float* a,
                     const float* b, int64_t width, int64_t seq) {
  const int64_t na = L.a_segments * width, nb = L.b_segments * width;
  const auto segment = [&](int i) -> std::pair<const float*, int64_t> {
    return i < L.a_segments ? std::make_pair(a + i * width, na)
                            : std::make_pair(b + (i - L.a_segments) * width, nb);
  };
  const auto strides = [&](int64_t ld) { return HeadStrides{seq * ld, at.head_dim, ld}; };
  int64_t ld;
  std::tie(at.q, ld) = segment(L.q);
  at.q_strides = strides(ld);
  std::tie(at.k, ld) = segment(L.k);
  at.k_strides = strides(ld);
  std::tie(at.v, ld) = segment(L.v);
  at.v_strides = strides(ld);
}

size_t bottleneck_attention_workspace_floats(const BottleneckAttentionWeights& w, int64_t batch,
                                             int64_t seq, int num_threads) {
  const Sizes s = check(w, batch, seq);
  const int64_t na = s.L.a_segments * s.width, nb = s.L.b_segments * s.width;
  return static_cast<size_t>(round16(s.rows * na) + round16(s.rows * nb) +
                             round16(s.rows * s.width) + 2 * round16(na)) +
         attention_workspace_floats(attention_args(s, batch, seq, w.heads), num_threads);
}

void bottleneck_attention_forward(const BottleneckAttentionWeights& w, const float* h,
                                  int64_t ldh, int64_t batch, int64_t seq,
                                  const uint8_t* key_mask, float* out, float* scores,
                                  int num_threads, float* workspace,
                                  const BottleneckAttentionDropout& dropout) {
  const Sizes s = check(w, batch, seq);
  if (s.rows == 0 || s.width == 0) return;
  const int64_t width = s.width, na = s.L.a_segments * width, nb = s.L.b_segments * width;
  float* ws = workspace != nullptr
                  ? workspace
                  : thread_scratch(bottleneck_attention_workspace_floats(w, batch, seq, num_threads));
  float* a = ws;
  float* b = a + round16(s.rows * na);
  float* ctx = b + round16(s.rows * nb);
  float* scale = ctx + round16(s.rows * width);
  float* shift = scale + round16(na);
  float* attention_ws = shift + round16(na);

  // GEMM over h. The normalized segments are b (segment 0 unless mode none) and, in mode shared,
  // s (segment 1); NoNorm runs at store through per-column scale/shift (1 and 0 elsewhere),
  // LayerNorm per segment once the GEMM is done.
  const bool has_b = s.L.residual_in_a;
  const bool has_s = w.mode == AttentionMode::shared;
  gemm::Epilogue ep;
  if (w.norm == gemm::Norm::nonorm && has_b) {
    std::fill(scale, scale + na, 1.0f);
    std::fill(shift, shift + na, 0.0f);
    std::copy(w.input_norm_weight, w.input_norm_weight + width, scale);
    std::copy(w.input_norm_bias, w.input_norm_bias + width, shift);
    if (has_s) {
      std::copy(w.attention_norm_weight, w.attention_norm_weight + width, scale + width);
      std::copy(w.attention_norm_bias, w.attention_norm_bias + width, shift + width);
    }
    ep.norm = gemm::Norm::nonorm;
    ep.norm_weight = scale;
    ep.norm_bias = shift;
  }
  gemm::gemm(h, ldh, s.rows, *w.over_h, a, na, ep, num_threads);
  if (w.norm == gemm::Norm::layernorm && has_b) {
    const gemm::IsaGemm& kern = gemm::isa_gemm(w.over_h->isa());
    const int nt = s.rows * width >= (1 << 14) ? std::max(num_threads, 1) : 1;
    gemm::parallel(nt, [&](int tid, int threads) {
      const int64_t r0 = s.rows * tid / threads, r1 = s.rows * (tid + 1) / threads;
      kern.layernorm_rows(a + r0 * na, na, r1 - r0, width, w.input_norm_weight,
                          w.input_norm_bias, w.eps);
      if (has_s)
        kern.layernorm_rows(a + r0 * na + width, na, r1 - r0, width, w.attention_norm_weight,
                            w.attention_norm_bias, w.eps);
    });
  }
  // GEMM over the bottleneck (s in mode shared, b in mode bottleneck), bias only.
  if (nb > 0) {
    const float* src = a + (has_s ? width : 0);
    gemm::gemm(src, na, s.rows, *w.over_bottleneck, b, nb, gemm::Epilogue{}, num_threads);
  }
  AttentionArgs at = attention_args(s, batch, seq, w.heads);
  set_projections(at, s.L, a, b, width, seq);
  at.key_mask = key_mask;
  at.mask_batch_stride = seq;
  at.ctx = ctx;
  at.ctx_strides = HeadStrides{seq * width, s.head_dim, width};
  at.scores = scores;
  at.dropout = dropout.attn;
  attention_forward(at, num_threads, attention_ws);

  // out = N(ctx Woᵀ + bo + residual), residual b (A's segment 0) or h.
  const float* residual = has_b ? a : h;
  const int64_t ld_residual = has_b ? na : ldh;
  if (!dropout.hidden.active) {
    linear_norm_forward(ctx, width, s.rows, *w.output, residual, ld_residual, w.norm,
                        w.output_norm_weight, w.output_norm_bias, w.eps, out, width, num_threads);
    return;
  }
  // Hidden dropout sits between the GEMM and the residual: the GEMM without epilogue, dropout
  // plus residual in one pass, then the norm in place.
  gemm::gemm(ctx, width, s.rows, *w.output, out, width, gemm::Epilogue{}, num_threads);
  mbk::dropout_rows(out, width, s.rows, width, dropout.hidden, 0, residual, ld_residual, num_threads);
  norm_forward(w.norm, out, nullptr, w.output_norm_weight, w.output_norm_bias, w.eps, out, s.rows,
               width, num_threads);
}

}  // namespace mbk::ops
