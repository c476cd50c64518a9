// Attention kernel templates over one vector type V; included only by the per-ISA translation
// units attention_<isa>.cc, each compiled with its ISA's flags. V is simd::<isa>::VecF32.
//
// Per task (batch b, head h, a chunk of query rows):
//   1. Gather the attended keys of (b, h) once (kept while the thread's next task has the same
//      b and h): Kᵀ [D, n_pad] and V [n, d_pad], n = attended keys, zero-padded. Masked keys are
//      never touched again, so a padded batch costs only its real keys.
//   2. For MR query rows at a time: S = (Q Kᵀ) / √D into an MR x n_pad scratch (stays in L1),
//      softmax in place (row max, exp, row sum), ctx = (P V) / rowsum into the output.
// Both products are one microkernel, mac_tile<MR, NV>: an MR x (NV·W) tile of C in MR·NV vector
// accumulators, per k NV loads of a B row and MR broadcasts of A (the same register blocking as
// the GEMM's). QKᵀ streams Kᵀ rows (k = D), PV streams V rows (k = n).
//
// Internal linkage and no std:: calls, as in gemm_impl.h: every ISA's TU instantiates these
// templates with its own flags.
#pragma once

#include <cfloat>
#include <cmath>  // INFINITY
#include <cstdint>

#include "ops/attention_kernels.h"
#include "simd/math.h"

namespace mbk::ops {
namespace {

// C[m, 0:nc] = scale[m] · Σ_k A[m, k] B[k, 0:nc] for m < MR; nc in ((NV - 1) W, NV W]. B rows
// hold NV·W readable floats (the workspaces are padded), C is written only up to nc.
template <class V, int MR, int NV>
void mac_tile(int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
              int64_t ldc, int nc, const float* scale) {
  using reg = typename V::reg;
  constexpr int W = V::W;
  reg acc[MR][NV];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[m][v] = V::zero();
#pragma GCC unroll 1
  for (int64_t kk = 0; kk < k; ++kk) {
    reg bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) bv[v] = V::loadu(b + kk * ldb + v * W);
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      const reg am = V::set1(a[m * lda + kk]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[m][v] = V::fmadd(am, bv[v], acc[m][v]);
    }
  }
  const int tail = nc - (NV - 1) * W;
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m) {
    const reg s = V::set1(scale[m]);
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      float* out = c + m * ldc + v * W;
      if (v == NV - 1 && tail < W)
        V::store_partial(out, V::mul(acc[m][v], s), tail);
      else
        V::storeu(out, V::mul(acc[m][v], s));
    }
  }
}

using MacTile = void (*)(int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t,
                         int, const float*);

// The tile for mr <= MR rows and nv <= NV vectors; instantiates them all.
template <class V, int MR, int NV>
MacTile pick_mac(int mr, int nv) {
  if constexpr (MR > 1) {
    if (mr < MR) return pick_mac<V, MR - 1, NV>(mr, nv);
  }
  if constexpr (NV > 1) {
    if (nv < NV) return pick_mac<V, MR, NV - 1>(mr, nv);
  }
  return &mac_tile<V, MR, NV>;
}

// C[0:rows, 0:n] = scale · (A[0:rows, 0:k] B[0:k, 0:n]), rows <= MR, in column blocks of NV·W.
template <class V, int MR, int NV>
void mac_rows(int rows, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
              float* c, int64_t ldc, int64_t n, const float* scale) {
  constexpr int W = V::W, NC = NV * W;
  for (int64_t c0 = 0; c0 < n; c0 += NC) {
    const int nc = n - c0 < NC ? static_cast<int>(n - c0) : NC;
    const int nv = (nc + W - 1) / W;
    const MacTile f = rows == MR && nv == NV ? &mac_tile<V, MR, NV> : pick_mac<V, MR, NV>(rows, nv);
    f(k, a, lda, b + c0, ldb, c + c0, ldc, nc, scale);
  }
}

// In place on s[0:n]: p = exp(s - max(s)); returns Σ p. n >= 1.
template <class V>
float softmax_numerator(float* s, int64_t n) {
  using reg = typename V::reg;
  constexpr int W = V::W;
  const int64_t nfull = n / W * W;
  const int tail = static_cast<int>(n - nfull);
  float mx = -INFINITY;  // not -FLT_MAX: a row of -inf scores gives NaN, as torch's softmax does
  if (nfull > 0) {
    reg mv = V::loadu(s);
    for (int64_t c = W; c < nfull; c += W) mv = V::max(mv, V::loadu(s + c));
    float lanes[W];
    V::storeu(lanes, mv);
    for (int i = 0; i < W; ++i) mx = lanes[i] > mx ? lanes[i] : mx;
  }
  // The tail's padding lanes would read as 0 and could exceed a negative maximum.
  for (int64_t c = nfull; c < n; ++c) mx = s[c] > mx ? s[c] : mx;
  const reg neg_max = V::set1(-mx);
  reg sum = V::zero();
  for (int64_t c = 0; c < nfull; c += W) {
    const reg p = simd::exp_nonpositive<V>(V::add(V::loadu(s + c), neg_max));
    V::storeu(s + c, p);
    sum = V::add(sum, p);
  }
  if (tail > 0) {
    V::store_partial(s + nfull, simd::exp_nonpositive<V>(V::add(V::load_partial(s + nfull, tail), neg_max)), tail);
    sum = V::add(sum, V::load_partial(s + nfull, tail));  // padding lanes read 0
  }
  return V::reduce_add(sum);
}

// Gathers the keys of (b, h) into Kᵀ [D, n_pad] and V [., d_pad]: the attended ones, or all of
// them when none is (then the caller averages V uniformly). Returns how many were gathered and
// sets *uniform.
inline int64_t gather_keys(const AttentionArgs& a, int64_t b, int64_t h, const AttentionLayout& L,
                           float* kt, float* vc, bool* uniform) {
  const int64_t sk = a.seq_k, d = a.head_dim;
  const uint8_t* mask = a.key_mask != nullptr ? a.key_mask + b * a.mask_batch_stride : nullptr;
  int64_t n = 0;
  if (mask != nullptr)
    for (int64_t j = 0; j < sk; ++j) n += mask[j] != 0;
  *uniform = mask != nullptr && n == 0;
  if (*uniform) mask = nullptr;
  const float* kbase = a.k + b * a.k_strides.batch + h * a.k_strides.head;
  const float* vbase = a.v + b * a.v_strides.batch + h * a.v_strides.head;
  int64_t j = 0;
  for (int64_t key = 0; key < sk; ++key) {
    if (mask != nullptr && mask[key] == 0) continue;
    const float* kr = kbase + key * a.k_strides.row;
    const float* vr = vbase + key * a.v_strides.row;
    float* vo = vc + j * L.d_pad;
    for (int64_t e = 0; e < d; ++e) {
      kt[e * L.n_pad + j] = kr[e];
      vo[e] = vr[e];
    }
    for (int64_t e = d; e < L.d_pad; ++e) vo[e] = 0.0f;
    ++j;
  }
  for (int64_t e = 0; e < d; ++e)
    for (int64_t jj = j; jj < L.n_pad; ++jj) kt[e * L.n_pad + jj] = 0.0f;
  return j;
}

template <class V, int MR, int NV>
void attention_tasks(const AttentionArgs& a, const AttentionTasks& tasks, int64_t t0, int64_t t1,
                     const AttentionLayout& L, float* ws) {
  static_assert(MR <= kMaxTileRows, "the scores workspace holds kMaxTileRows rows");
  float* kt = ws;
  float* vc = kt + L.kt;
  float* s = vc + L.vc;
  const int64_t d = a.head_dim, sk = a.seq_k, H = a.heads;
  const float inv_sqrt_d = 1.0f / __builtin_sqrtf(static_cast<float>(d));
  float qk_scale[MR];
  for (int m = 0; m < MR; ++m) qk_scale[m] = inv_sqrt_d;
  int64_t gathered_bh = -1, n = 0;
  bool uniform = false;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t bh = t / tasks.chunks, b = bh / H, h = bh % H;
    const int64_t q0 = (t % tasks.chunks) * tasks.q_chunk;
    const int64_t q1 = q0 + tasks.q_chunk < a.seq_q ? q0 + tasks.q_chunk : a.seq_q;
    if (bh != gathered_bh) {
      n = gather_keys(a, b, h, L, kt, vc, &uniform);
      gathered_bh = bh;
    }
    const uint8_t* mask = a.key_mask != nullptr ? a.key_mask + b * a.mask_batch_stride : nullptr;
    const float* qbase = a.q + b * a.q_strides.batch + h * a.q_strides.head;
    float* cbase = a.ctx + b * a.ctx_strides.batch + h * a.ctx_strides.head;
    for (int64_t r0 = q0; r0 < q1; r0 += MR) {
      const int rows = q1 - r0 < MR ? static_cast<int>(q1 - r0) : MR;
      float* ctx = cbase + r0 * a.ctx_strides.row;
      float* scores_out = a.scores != nullptr ? a.scores + (bh * a.seq_q + r0) * sk : nullptr;
      float pv_scale[MR];
      if (uniform) {
        // No key attends: the reference's softmax over equal finfo.min scores is uniform.
        for (int m = 0; m < rows; ++m) {
          for (int64_t j = 0; j < n; ++j) s[m * L.n_pad + j] = 1.0f;
          pv_scale[m] = 1.0f / static_cast<float>(n);
          if (scores_out != nullptr)
            for (int64_t j = 0; j < sk; ++j) scores_out[m * sk + j] = -FLT_MAX;
        }
      } else {
        mac_rows<V, MR, NV>(rows, d, qbase + r0 * a.q_strides.row, a.q_strides.row, kt, L.n_pad,
                            s, L.n_pad, n, qk_scale);
        for (int m = 0; m < rows; ++m) {
          float* srow = s + m * L.n_pad;
          if (scores_out != nullptr) {
            // Back to key positions: attended keys in order, masked ones at finfo.min.
            float* out = scores_out + m * sk;
            int64_t j = 0;
            for (int64_t key = 0; key < sk; ++key)
              out[key] = mask == nullptr || mask[key] != 0 ? srow[j++] : -FLT_MAX;
          }
          pv_scale[m] = 1.0f / softmax_numerator<V>(srow, n);
        }
      }
      mac_rows<V, MR, NV>(rows, n, s, L.n_pad, vc, L.d_pad, ctx, a.ctx_strides.row, d, pv_scale);
    }
  }
}

}  // namespace
}  // namespace mbk::ops
