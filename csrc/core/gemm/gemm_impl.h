// GEMM kernel templates over one vector type V; included only by the per-ISA translation units
// gemm_<isa>.cc, each compiled with its ISA's flags (and by csrc/tests/test_gemm.cc, which runs
// the 6 x 64 AVX-512 tiling on an emulated 16-lane vector). V is simd::<isa>::VecF32 extended there with
// min and div (for GELU's erf).
//
// Microkernel ukernel<V, MR, NV, NR>: an MR x (NV * W) tile of C in MR * NV vector accumulators,
// started from the panel's bias row. Per k: NV aligned loads of the packed panel row, MR
// broadcasts of A[m][k] from row-major A, MR * NV FMAs. No K blocking: K is at most a few hundred
// here and one row block of A (MR x K) stays in L1 while the panels stream from L2. The epilogue
// runs on the accumulators before the only store of C. Tiles below MR rows or NV vectors (the M
// and N edges) are their own instantiations, so edges cost no wasted FMAs beyond the last
// vector's padding lanes.
//
// Everything here has internal linkage (the anonymous namespace): every ISA's TU instantiates
// these templates with its own flags, and a shared inline symbol compiled with -mavx512f could be
// the copy the linker keeps for the scalar path. For the same reason: no std:: calls.
#pragma once

#include <cstdint>

#include "gemm/gemm_kernels.h"

namespace mbk::gemm {
namespace {

// The epilogue of one tile: pointers already at the tile's first row / column.
struct TileEpilogue {
  Act act;
  const float* res;  // null: no residual
  int64_t ldr;
  const float* scale;  // null: no NoNorm (LayerNorm runs after the tile)
  const float* shift;
};

using UKernel = void (*)(int64_t k, const float* a, int64_t lda, const float* w, float* c,
                         int64_t ldc, int nc, const TileEpilogue& e);

// erf on [-4, 4] (beyond, +-1 in fp32) as a rational function x P(x^2) / Q(x^2); the coefficients
// are Eigen's generic_fast_erf_float. Max abs error ~4e-7 in fp32 (csrc/tests/test_gemm.cc).
template <class V>
inline typename V::reg erf_v(typename V::reg x) {
  using reg = typename V::reg;
  x = V::min(V::max(x, V::set1(-4.0f)), V::set1(4.0f));
  const reg x2 = V::mul(x, x);
  reg p = V::fmadd(x2, V::set1(-2.72614225801306e-10f), V::set1(2.77068142495902e-08f));
  p = V::fmadd(x2, p, V::set1(-2.10102402082508e-06f));
  p = V::fmadd(x2, p, V::set1(-5.69250639462346e-05f));
  p = V::fmadd(x2, p, V::set1(-7.34990630326855e-04f));
  p = V::fmadd(x2, p, V::set1(-2.95459980854025e-03f));
  p = V::fmadd(x2, p, V::set1(-1.60960333262415e-02f));
  p = V::mul(x, p);
  reg q = V::fmadd(x2, V::set1(-1.45660718464996e-05f), V::set1(-2.13374055278905e-04f));
  q = V::fmadd(x2, q, V::set1(-1.68282697438203e-03f));
  q = V::fmadd(x2, q, V::set1(-7.37332916720468e-03f));
  q = V::fmadd(x2, q, V::set1(-1.42647390514189e-02f));
  return V::div(p, q);
}

// 0.5 x (1 + erf(x / sqrt 2))
template <class V>
inline typename V::reg gelu_v(typename V::reg x) {
  const typename V::reg h = V::mul(x, V::set1(0.5f));
  return V::fmadd(h, erf_v<V>(V::mul(x, V::set1(0.70710678118654752f))), h);
}

// The epilogue of an MR x nc tile and its only store: act, residual, NoNorm on the accumulators.
template <class V, int MR, int NV>
[[gnu::always_inline]] inline void store_tile(typename V::reg (&acc)[MR][NV], float* c, int64_t ldc, int nc,
                       const TileEpilogue& e) {
  using reg = typename V::reg;
  constexpr int W = V::W;
  const int tail = nc - (NV - 1) * W;  // columns in the last vector, 1..W
  const bool relu = e.act == Act::relu, gelu = e.act == Act::gelu;
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    const bool part = v == NV - 1 && tail < W;
    const int col = v * W;
    reg sc = V::zero(), sh = V::zero();
    if (e.scale != nullptr) {
      sc = part ? V::load_partial(e.scale + col, tail) : V::loadu(e.scale + col);
      sh = part ? V::load_partial(e.shift + col, tail) : V::loadu(e.shift + col);
    }
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      reg y = acc[m][v];
      // max(0, y), not max(y, 0): x86 max returns its second operand when one is NaN, and
      // torch's relu keeps NaN (a NaN input must stay NaN, not turn into 0).
      if (relu) y = V::max(V::zero(), y);
      if (gelu) y = gelu_v<V>(y);
      if (e.res != nullptr) {
        const float* r = e.res + m * e.ldr + col;
        y = V::add(y, part ? V::load_partial(r, tail) : V::loadu(r));
      }
      if (e.scale != nullptr) y = V::fmadd(y, sc, sh);
      float* out = c + m * ldc + col;
      if (part)
        V::store_partial(out, y, tail);
      else
        V::storeu(out, y);
    }
  }
}

// C[0:MR, 0:nc] = epilogue(A[0:MR, 0:k] W_panelᵀ + bias); nc in ((NV - 1) W, NV W].
template <class V, int MR, int NV, int NR>
void ukernel(int64_t k, const float* a, int64_t lda, const float* w, float* c, int64_t ldc, int nc,
             const TileEpilogue& e) {
  using reg = typename V::reg;
  constexpr int W = V::W;
  static_assert(NV * W <= NR, "the tile is at most one panel wide");
  reg acc[MR][NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    const reg bias = V::load(w + v * W);
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) acc[m][v] = bias;
  }
  w += NR;
  const float* ar[MR];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m) ar[m] = a + m * lda;
  // Not unrolled: GCC 12 unrolling it rotates the 6x64 kernel's accumulators through extra zmm
  // moves, and on AVX2 it gained under 1%.
#pragma GCC unroll 1
  for (int64_t kk = 0; kk < k; ++kk) {
    reg b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = V::load(w + v * W);
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      const reg am = V::set1(ar[m][kk]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[m][v] = V::fmadd(am, b[v], acc[m][v]);
    }
    w += NR;
  }

  store_tile<V, MR, NV>(acc, c, ldc, nc, e);
}

// The microkernel for an mr x nv edge tile (1 <= mr <= M, 1 <= nv <= NV) from the family K
// (K::get<mr, nv>()); instantiates them all.
template <class K, int M, int NV>
auto pick_ukernel(int mr, int nv) {
  if constexpr (M > 1) {
    if (mr < M) return pick_ukernel<K, M - 1, NV>(mr, nv);
  }
  if constexpr (NV > 1) {
    if (nv < NV) return pick_ukernel<K, M, NV - 1>(mr, nv);
  }
  return K::template get<M, NV>();
}

template <class V, int NR>
struct F32Kernels {
  template <int M, int NV>
  static UKernel get() { return &ukernel<V, M, NV, NR>; }
};

template <class V>
void layernorm_rows(float* y, int64_t ldy, int64_t rows, int64_t n, const float* w,
                    const float* b, float eps) {
  using reg = typename V::reg;
  constexpr int W = V::W;
  const int64_t nfull = n / W * W;
  const int tail = static_cast<int>(n - nfull);
  for (int64_t r = 0; r < rows; ++r) {
    float* row = y + r * ldy;
    // Two passes (mean, then squared deviations): exact enough where E[x^2] - mean^2 cancels.
    reg s0 = V::zero(), s1 = V::zero();
    int64_t c = 0;
    for (; c + 2 * W <= n; c += 2 * W) {
      s0 = V::add(s0, V::loadu(row + c));
      s1 = V::add(s1, V::loadu(row + c + W));
    }
    if (c < nfull) s0 = V::add(s0, V::loadu(row + c));
    if (tail > 0) s1 = V::add(s1, V::load_partial(row + nfull, tail));  // masked lanes read 0
    const float mean = V::reduce_add(V::add(s0, s1)) / static_cast<float>(n);
    const reg neg_mean = V::set1(-mean);
    reg q0 = V::zero(), q1 = V::zero();
    for (c = 0; c + 2 * W <= n; c += 2 * W) {
      const reg d0 = V::add(V::loadu(row + c), neg_mean);
      const reg d1 = V::add(V::loadu(row + c + W), neg_mean);
      q0 = V::fmadd(d0, d0, q0);
      q1 = V::fmadd(d1, d1, q1);
    }
    if (c < nfull) {
      const reg d = V::add(V::loadu(row + c), neg_mean);
      q0 = V::fmadd(d, d, q0);
    }
    float ss = V::reduce_add(V::add(q0, q1));
    for (c = nfull; c < n; ++c) ss += (row[c] - mean) * (row[c] - mean);
    // __builtin_sqrtf, not std::sqrt: no shared inline symbol (see the header comment).
    const float rstd = 1.0f / __builtin_sqrtf(ss / static_cast<float>(n) + eps);
    // (x - mean) * rstd, not x * rstd - mean * rstd: the latter loses the digits that cancel
    // when a row's mean is large against its spread.
    const reg rs = V::set1(rstd);
    for (c = 0; c < nfull; c += W) {
      const reg t = V::mul(V::add(V::loadu(row + c), neg_mean), rs);
      V::storeu(row + c, V::fmadd(t, V::loadu(w + c), V::loadu(b + c)));
    }
    if (tail > 0) {
      const reg t = V::mul(V::add(V::load_partial(row + nfull, tail), neg_mean), rs);
      V::store_partial(row + nfull,
                       V::fmadd(t, V::load_partial(w + nfull, tail),
                                V::load_partial(b + nfull, tail)),
                       tail);
    }
  }
}

// The epilogue of the tile at row m, column col.
inline TileEpilogue tile_epilogue(const Epilogue& ep, int64_t m, int64_t col, bool nonorm) {
  return {ep.act, ep.residual != nullptr ? ep.residual + m * ep.ld_residual + col : nullptr,
          ep.ld_residual, nonorm ? ep.norm_weight + col : nullptr, nonorm ? ep.norm_bias + col : nullptr};
}

// IsaGemm::run for the MR x (NV * W) microkernel family. Row block outer, panels inner: the row
// block of A stays in L1 and every panel streams from L2 (grouping several row blocks per panel,
// to keep the panel in L1 instead, measured no faster on Zen 3).
template <class V, int MR, int NV>
void run_rows(const GemmArgs& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  constexpr int W = V::W, NR = NV * W;
  const int64_t panels = (g.n + NR - 1) / NR;
  const int64_t pstride = (g.k + 1) * NR;
  const Epilogue& ep = g.ep;
  const bool nonorm = ep.norm == Norm::nonorm;
  const bool layernorm = ep.norm == Norm::layernorm && p0 == 0 && p1 == panels;
  for (int64_t m = m0; m < m1; m += MR) {
    const int mr = m1 - m < MR ? static_cast<int>(m1 - m) : MR;
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t col = p * NR;
      const int nc = g.n - col < NR ? static_cast<int>(g.n - col) : NR;
      const int nv = (nc + W - 1) / W;
      const TileEpilogue e = tile_epilogue(ep, m, col, nonorm);
      const UKernel uk = mr == MR && nv == NV ? &ukernel<V, MR, NV, NR>
                                              : pick_ukernel<F32Kernels<V, NR>, MR, NV>(mr, nv);
      uk(g.k, g.a + m * g.lda, g.lda, g.w + p * pstride, g.c + m * g.ldc + col, g.ldc, nc, e);
    }
    if (layernorm)
      layernorm_rows<V>(g.c + m * g.ldc, g.ldc, mr, g.n, ep.norm_weight, ep.norm_bias, ep.eps);
  }
}

}  // namespace
}  // namespace mbk::gemm
