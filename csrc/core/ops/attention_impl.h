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
// the GEMM's). QKᵀ streams Kᵀ rows (k = D), PV streams V rows (k = n). Dropout multiplies the
// probabilities by VecF32::dropout_multiplier's factors (the gathered keys' positions as offsets).
//
// The backward (attention_backward_tasks) runs one (batch, head) per task: the keys gathered once
// as Kᵀ, Vᵀ and K; per block of kBackwardRows queries S and dP = dctx Vᵀ by MR rows, then per row
// softmax, dropout and dS (probs_and_ds), then dV += P_droppedᵀ dctx and dK += dSᵀ Q (MR keys at a
// time, A read transposed through its strides, accumulating into C) and dQ = dS K.
//
// Internal linkage and no std:: calls, as in gemm_impl.h: every ISA's TU instantiates these
// templates with its own flags.
#pragma once

#include <cfloat>
#include <cmath>  // INFINITY
#include <cstdint>

#include "dropout.h"
#include "ops/attention_kernels.h"
#include "simd/math.h"

namespace mbk::ops {
namespace {

// C[m, 0:nc] = scale[m] · Σ_k A[m, k] B[k, 0:nc] (ACC: C[m, 0:nc] += that) for m < MR; nc in
// ((NV - 1) W, NV W]. A's element (m, k) is a[m · am + k · ak] (so a transposed A costs nothing:
// its elements are broadcast one by one either way). B rows hold NV·W readable floats (the
// workspaces are padded), C is read and written only up to nc.
template <class V, int MR, int NV, bool ACC>
void mac_tile(int64_t k, const float* a, int64_t am, int64_t ak, const float* b, int64_t ldb,
              float* c, int64_t ldc, int nc, const float* scale) {
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
      const reg av = V::set1(a[m * am + kk * ak]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[m][v] = V::fmadd(av, bv[v], acc[m][v]);
    }
  }
  const int tail = nc - (NV - 1) * W;
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m) {
    const reg s = V::set1(scale[m]);
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      float* out = c + m * ldc + v * W;
      const bool partial = v == NV - 1 && tail < W;
      reg r = V::mul(acc[m][v], s);
      if constexpr (ACC) r = V::add(r, partial ? V::load_partial(out, tail) : V::loadu(out));
      if (partial)
        V::store_partial(out, r, tail);
      else
        V::storeu(out, r);
    }
  }
}

using MacTile = void (*)(int64_t, const float*, int64_t, int64_t, const float*, int64_t, float*,
                         int64_t, int, const float*);

// The tile for mr <= MR rows and nv <= NV vectors; instantiates them all.
template <class V, int MR, int NV, bool ACC>
MacTile pick_mac(int mr, int nv) {
  if constexpr (MR > 1) {
    if (mr < MR) return pick_mac<V, MR - 1, NV, ACC>(mr, nv);
  }
  if constexpr (NV > 1) {
    if (nv < NV) return pick_mac<V, MR, NV - 1, ACC>(mr, nv);
  }
  return &mac_tile<V, MR, NV, ACC>;
}

// C[0:rows, 0:n] (+)= scale · (A[0:rows, 0:k] B[0:k, 0:n]), rows <= MR, in column blocks of NV·W;
// A's element (m, k) at a[m · am + k · ak].
template <class V, int MR, int NV, bool ACC = false>
void mac_rows(int rows, int64_t k, const float* a, int64_t am, int64_t ak, const float* b,
              int64_t ldb, float* c, int64_t ldc, int64_t n, const float* scale) {
  constexpr int W = V::W, NC = NV * W;
  for (int64_t c0 = 0; c0 < n; c0 += NC) {
    const int nc = n - c0 < NC ? static_cast<int>(n - c0) : NC;
    const int nv = (nc + W - 1) / W;
    const MacTile f = rows == MR && nv == NV ? &mac_tile<V, MR, NV, ACC>
                                             : pick_mac<V, MR, NV, ACC>(rows, nv);
    f(k, a, am, ak, b + c0, ldb, c + c0, ldc, nc, scale);
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

// The positions of the keys batch b attends to, in order, into kpos (n_pad entries; the rest
// zero), or all of them when none is (then the softmax over equal finfo.min scores is uniform:
// *uniform is set). Returns how many.
inline int64_t key_positions(const AttentionArgs& a, int64_t b, int64_t n_pad, int32_t* kpos,
                             bool* uniform) {
  const uint8_t* mask = a.key_mask != nullptr ? a.key_mask + b * a.mask_batch_stride : nullptr;
  int64_t n = 0;
  for (int64_t key = 0; key < a.seq_k; ++key)
    if (mask == nullptr || mask[key] != 0) kpos[n++] = static_cast<int32_t>(key);
  *uniform = n == 0;
  if (*uniform)
    for (int64_t key = 0; key < a.seq_k; ++key) kpos[n++] = static_cast<int32_t>(key);
  for (int64_t j = n; j < n_pad; ++j) kpos[j] = 0;
  return n;
}

// Rows kpos[0:n] of the [S, D] matrix at x (row stride ld) into xt [D, n_pad] (transposed) and/or
// xr [n, d_pad] (either may be null), zero-padded.
inline void gather_rows(const float* x, int64_t ld, const int32_t* kpos, int64_t n, int64_t d,
                        int64_t n_pad, int64_t d_pad, float* xt, float* xr) {
  for (int64_t j = 0; j < n; ++j) {
    const float* row = x + kpos[j] * ld;
    if (xt != nullptr)
      for (int64_t e = 0; e < d; ++e) xt[e * n_pad + j] = row[e];
    if (xr != nullptr) {
      for (int64_t e = 0; e < d; ++e) xr[j * d_pad + e] = row[e];
      for (int64_t e = d; e < d_pad; ++e) xr[j * d_pad + e] = 0.0f;
    }
  }
  if (xt != nullptr)
    for (int64_t e = 0; e < d; ++e)
      for (int64_t j = n; j < n_pad; ++j) xt[e * n_pad + j] = 0.0f;
}

// The dropout site's index of element (bh, i, 0), modulo 2³².
inline uint32_t probs_index(const AttentionArgs& a, int64_t bh, int64_t i) {
  return static_cast<uint32_t>(static_cast<uint64_t>((bh * a.seq_q + i) * a.seq_k));
}

// p[0:n] *= the dropout factors of keys kpos[0:n] in row (bh, i).
template <class V>
void drop_row(const AttentionArgs& a, int64_t bh, int64_t i, const int32_t* kpos, float* p,
              int64_t n) {
  constexpr int W = V::W;
  const DropoutMask& m = a.dropout;
  const uint32_t base = probs_index(a, bh, i);
  for (int64_t j = 0; j < n; j += W) {
    const auto f = V::dropout_multiplier(base, kpos + j, m.key, m.threshold, m.scale);
    if (n - j >= W)
      V::storeu(p + j, V::mul(V::loadu(p + j), f));
    else
      V::store_partial(p + j, V::mul(V::load_partial(p + j, int(n - j)), f), int(n - j));
  }
}

template <class V, int MR, int NV>
void attention_tasks(const AttentionArgs& a, const AttentionTasks& tasks, int64_t t0, int64_t t1,
                     const AttentionLayout& L, float* ws) {
  static_assert(MR <= kMaxTileRows, "the scores workspace holds kMaxTileRows rows");
  float* kt = ws;
  float* vc = kt + L.kt;
  float* s = vc + L.vc;
  int32_t* kpos = reinterpret_cast<int32_t*>(s + L.s);
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
      n = key_positions(a, b, L.n_pad, kpos, &uniform);
      gather_rows(a.k + b * a.k_strides.batch + h * a.k_strides.head, a.k_strides.row, kpos, n, d,
                  L.n_pad, L.d_pad, kt, nullptr);
      gather_rows(a.v + b * a.v_strides.batch + h * a.v_strides.head, a.v_strides.row, kpos, n, d,
                  L.n_pad, L.d_pad, nullptr, vc);
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
        mac_rows<V, MR, NV>(rows, d, qbase + r0 * a.q_strides.row, a.q_strides.row, 1, kt,
                            L.n_pad, s, L.n_pad, n, qk_scale);
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
      if (a.dropout.active)  // after the sum: dropout scales the normalized probabilities
        for (int m = 0; m < rows; ++m) drop_row<V>(a, bh, r0 + m, kpos, s + m * L.n_pad, n);
      mac_rows<V, MR, NV>(rows, n, s, L.n_pad, 1, vc, L.d_pad, ctx, a.ctx_strides.row, d,
                          pv_scale);
    }
  }
}

// Per row i of a block, given p = exp(s − max) (unnormalized, inv = 1 / Σ) or the uniform row,
// and dp = dctx Vᵀ in ds: p ← P (normalized), then with f the dropout factors (1 without
// dropout) dp ← dp · f, delta = Σ P dp, ds ← P (dp − delta) / √D [+ dscores / √D], and finally
// p ← P · f (the dropped probabilities dV needs).
template <class V>
void probs_and_ds(const AttentionArgs& a, const AttentionGradArgs& g, int64_t bh, int64_t i,
                  const int32_t* kpos, int64_t n, float inv, bool uniform, float inv_sqrt_d,
                  float* p, float* ds, float* mult) {
  using reg = typename V::reg;
  constexpr int W = V::W;
  const DropoutMask& dm = a.dropout;
  const uint32_t base = probs_index(a, bh, i);
  const reg vinv = V::set1(inv);
  reg delta = V::zero();
  const auto load = [](const float* x, int64_t left) {
    return left >= W ? V::loadu(x) : V::load_partial(x, int(left));
  };
  const auto store = [](float* x, reg v, int64_t left) {
    if (left >= W)
      V::storeu(x, v);
    else
      V::store_partial(x, v, int(left));
  };
  for (int64_t j = 0; j < n; j += W) {
    const int64_t left = n - j;
    const reg pv = V::mul(load(p + j, left), vinv);
    reg dp = load(ds + j, left);
    if (dm.active) {
      const reg f = V::dropout_multiplier(base, kpos + j, dm.key, dm.threshold, dm.scale);
      store(mult + j, f, left);
      dp = V::mul(dp, f);
    }
    store(p + j, pv, left);
    store(ds + j, dp, left);
    delta = V::fmadd(pv, dp, delta);  // padding lanes read 0
  }
  if (uniform) {  // every key masked: masked_fill passes no gradient to any score
    for (int64_t j = 0; j < n; ++j) ds[j] = 0.0f;
  } else {
    const reg neg_delta = V::set1(-V::reduce_add(delta)), isd = V::set1(inv_sqrt_d);
    for (int64_t j = 0; j < n; j += W) {
      const int64_t left = n - j;
      const reg pv = load(p + j, left);
      store(ds + j, V::mul(V::mul(pv, V::add(load(ds + j, left), neg_delta)), isd), left);
    }
    if (g.dscores != nullptr) {  // the returned scores' gradient, at the attended keys only
      const float* dsc = g.dscores + (bh * a.seq_q + i) * a.seq_k;
      for (int64_t j = 0; j < n; ++j) ds[j] += dsc[kpos[j]] * inv_sqrt_d;
    }
  }
  if (dm.active)
    for (int64_t j = 0; j < n; j += W) {
      const int64_t left = n - j;
      store(p + j, V::mul(load(p + j, left), load(mult + j, left)), left);
    }
}

template <class V, int MR, int NV>
void attention_backward_tasks(const AttentionArgs& a, const AttentionGradArgs& g, int64_t t0,
                              int64_t t1, const AttentionBackwardLayout& L, float* ws) {
  float* kt = ws;
  float* vt = kt + L.kt;
  float* kr = vt + L.vt;
  float* dk = kr + L.kr;
  float* dv = dk + L.dk;
  float* qb = dv + L.dv;
  float* dob = qb + L.qb;
  float* p = dob + L.dob;
  float* ds = p + L.p;
  float* mult = ds + L.ds;
  int32_t* kpos = reinterpret_cast<int32_t*>(mult + L.mult);
  const int64_t d = a.head_dim, sk = a.seq_k, sq = a.seq_q, H = a.heads;
  const int64_t np = L.n_pad, dp = L.d_pad;
  const float inv_sqrt_d = 1.0f / __builtin_sqrtf(static_cast<float>(d));
  float qk_scale[MR], ones[MR];
  for (int m = 0; m < MR; ++m) qk_scale[m] = inv_sqrt_d, ones[m] = 1.0f;
  for (int64_t bh = t0; bh < t1; ++bh) {
    const int64_t b = bh / H, h = bh % H;
    bool uniform = false;
    const int64_t n = key_positions(a, b, np, kpos, &uniform);
    gather_rows(a.k + b * a.k_strides.batch + h * a.k_strides.head, a.k_strides.row, kpos, n, d,
                np, dp, kt, kr);
    gather_rows(a.v + b * a.v_strides.batch + h * a.v_strides.head, a.v_strides.row, kpos, n, d,
                np, dp, vt, nullptr);
    for (int64_t e = 0; e < n * dp; ++e) dk[e] = dv[e] = 0.0f;
    const float* qbase = a.q + b * a.q_strides.batch + h * a.q_strides.head;
    const float* dobase = g.dctx + b * g.dctx_strides.batch + h * g.dctx_strides.head;
    float* dqbase = g.dq + b * g.dq_strides.batch + h * g.dq_strides.head;
    for (int64_t q0 = 0; q0 < sq; q0 += kBackwardRows) {
      const int64_t bq = sq - q0 < kBackwardRows ? sq - q0 : kBackwardRows;
      for (int64_t r = 0; r < bq; ++r) {
        const float* qrow = qbase + (q0 + r) * a.q_strides.row;
        const float* dorow = dobase + (q0 + r) * g.dctx_strides.row;
        for (int64_t e = 0; e < d; ++e) qb[r * dp + e] = qrow[e], dob[r * dp + e] = dorow[e];
        for (int64_t e = d; e < dp; ++e) qb[r * dp + e] = dob[r * dp + e] = 0.0f;
      }
      // S (scaled) into p and dP = dctx Vᵀ into ds, MR rows at a time; then each row's softmax,
      // dropout and dS.
      for (int64_t r0 = 0; r0 < bq; r0 += MR) {
        const int rows = bq - r0 < MR ? static_cast<int>(bq - r0) : MR;
        if (!uniform)
          mac_rows<V, MR, NV>(rows, d, qb + r0 * dp, dp, 1, kt, np, p + r0 * np, np, n, qk_scale);
        mac_rows<V, MR, NV>(rows, d, dob + r0 * dp, dp, 1, vt, np, ds + r0 * np, np, n, ones);
      }
      for (int64_t r = 0; r < bq; ++r) {
        float* prow = p + r * np;
        float inv;
        if (uniform) {
          for (int64_t j = 0; j < n; ++j) prow[j] = 1.0f;
          inv = 1.0f / static_cast<float>(n);
        } else {
          inv = 1.0f / softmax_numerator<V>(prow, n);
        }
        probs_and_ds<V>(a, g, bh, q0 + r, kpos, n, inv, uniform, inv_sqrt_d, prow, ds + r * np,
                        mult);
      }
      // dV += P_droppedᵀ dctx, dK += dSᵀ Q (MR keys at a time, k = the block's rows) and
      // dQ = dS K for the block's rows.
      for (int64_t j0 = 0; j0 < n; j0 += MR) {
        const int keys = n - j0 < MR ? static_cast<int>(n - j0) : MR;
        mac_rows<V, MR, NV, true>(keys, bq, p + j0, 1, np, dob, dp, dv + j0 * dp, dp, d, ones);
        if (!uniform)
          mac_rows<V, MR, NV, true>(keys, bq, ds + j0, 1, np, qb, dp, dk + j0 * dp, dp, d, ones);
      }
      for (int64_t r0 = 0; r0 < bq; r0 += MR) {
        const int rows = bq - r0 < MR ? static_cast<int>(bq - r0) : MR;
        float* dqrow = dqbase + (q0 + r0) * g.dq_strides.row;
        if (uniform)
          for (int m = 0; m < rows; ++m)
            for (int64_t e = 0; e < d; ++e) dqrow[m * g.dq_strides.row + e] = 0.0f;
        else
          mac_rows<V, MR, NV>(rows, n, ds + r0 * np, np, 1, kr, dp, dqrow, g.dq_strides.row, d,
                              ones);
      }
    }
    // Back to key positions; keys nobody attended get zero gradients.
    float* dkbase = g.dk + b * g.dk_strides.batch + h * g.dk_strides.head;
    float* dvbase = g.dv + b * g.dv_strides.batch + h * g.dv_strides.head;
    for (int64_t key = 0, j = 0; key < sk; ++key) {
      float* dkrow = dkbase + key * g.dk_strides.row;
      float* dvrow = dvbase + key * g.dv_strides.row;
      if (j < n && kpos[j] == key) {
        for (int64_t e = 0; e < d; ++e) dkrow[e] = dk[j * dp + e], dvrow[e] = dv[j * dp + e];
        ++j;
      } else {
        for (int64_t e = 0; e < d; ++e) dkrow[e] = dvrow[e] = 0.0f;
      }
    }
  }
}

// dropout_rows (attention.h) on rows [r0, r1).
template <class V>
void dropout_rows_impl(float* x, int64_t ldx, int64_t r0, int64_t r1, int64_t cols,
                       const DropoutMask& m, uint64_t first, const float* residual,
                       int64_t ld_residual) {
  constexpr int W = V::W;
  static const int32_t kIota[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  static_assert(W <= 16, "kIota holds 16 lane offsets");
  for (int64_t r = r0; r < r1; ++r) {
    float* row = x + r * ldx;
    const float* res = residual != nullptr ? residual + r * ld_residual : nullptr;
    const uint64_t row_first = first + static_cast<uint64_t>(r * cols);
    for (int64_t c = 0; c < cols; c += W) {
      const int left = cols - c < W ? static_cast<int>(cols - c) : W;
      const auto f = V::dropout_multiplier(static_cast<uint32_t>(row_first + c), kIota, m.key,
                                           m.threshold, m.scale);
      auto y = V::mul(left == W ? V::loadu(row + c) : V::load_partial(row + c, left), f);
      if (res != nullptr) y = V::add(y, left == W ? V::loadu(res + c) : V::load_partial(res + c, left));
      if (left == W)
        V::storeu(row + c, y);
      else
        V::store_partial(row + c, y, left);
    }
  }
}

}  // namespace
}  // namespace mbk::ops
