// Backward-of-epilogue kernel templates over one vector type V (epilogue_backward.h); included by
// the per-ISA translation units gemm_<isa>.cc after gemm_impl.h (whose erf_v they use), each
// compiled with its ISA's flags. Besides gemm_impl.h's V (min, div) they need where_positive(u, x)
// (x where u > 0, else 0); exp is simd/math.h's.
//
// Both kernels walk one row at a time, in vectors of W columns with one partial vector for the
// tail, and add into the caller's per-chunk partial column sums (rows of n floats that stay in
// L1 for MobileBERT's widths), so a chunk's sums are in row order.
//
// Internal linkage and no std:: calls, for the reason given in gemm_impl.h.
#pragma once

#include <cstdint>

#include "gemm/gemm_impl.h"
#include "simd/math.h"

namespace mbk::gemm {
namespace {

template <class V>
inline typename V::reg load_n(const float* p, int cnt) {
  return cnt == V::W ? V::loadu(p) : V::load_partial(p, cnt);
}

template <class V>
inline void store_n(float* p, typename V::reg v, int cnt) {
  if (cnt == V::W)
    V::storeu(p, v);
  else
    V::store_partial(p, v, cnt);
}

// acc[0:cnt] += v
template <class V>
inline void accumulate(float* acc, typename V::reg v, int cnt) {
  store_n<V>(acc, V::add(load_n<V>(acc, cnt), v), cnt);
}

// Rows [r0, r1) of LayerNorm's backward (epilogue_backward.h): per row, mean and variance by two
// passes (as the forward computes them), then the row sums of g*w and g*w*t_hat, then
// gt = rstd * (g*w - mean(g*w) - t_hat * mean(g*w*t_hat)) and the column sums.
template <class V>
void layernorm_backward_rows(const float* g, const float* t, const float* w, float eps, float* gt,
                             int64_t r0, int64_t r1, int64_t n, float* pw, float* pb, float* ps) {
  using reg = typename V::reg;
  constexpr int W = V::W;
  const int64_t nfull = n / W * W;
  const float fn = static_cast<float>(n);
  for (int64_t r = r0; r < r1; ++r) {
    const float* tr = t + r * n;
    const float* gr = g + r * n;
    float* out = gt + r * n;
    reg s = V::zero();
    for (int64_t c = 0; c < nfull; c += W) s = V::add(s, V::loadu(tr + c));
    float sum = V::reduce_add(s);
    for (int64_t c = nfull; c < n; ++c) sum += tr[c];
    const float mean = sum / fn;
    const reg neg_mean = V::set1(-mean);
    reg q = V::zero();
    for (int64_t c = 0; c < nfull; c += W) {
      const reg d = V::add(V::loadu(tr + c), neg_mean);
      q = V::fmadd(d, d, q);
    }
    float ss = V::reduce_add(q);
    for (int64_t c = nfull; c < n; ++c) ss += (tr[c] - mean) * (tr[c] - mean);
    const float rstd = 1.0f / __builtin_sqrtf(ss / fn + eps);
    const reg rs = V::set1(rstd);
    // Masked tail lanes read g = 0, so they add nothing to either sum.
    reg a1 = V::zero(), a2 = V::zero();
    for (int64_t c = 0; c < n; c += W) {
      const int cnt = n - c < W ? static_cast<int>(n - c) : W;
      const reg gw = V::mul(load_n<V>(gr + c, cnt), load_n<V>(w + c, cnt));
      const reg th = V::mul(V::add(load_n<V>(tr + c, cnt), neg_mean), rs);
      a1 = V::add(a1, gw);
      a2 = V::fmadd(gw, th, a2);
    }
    const reg m1 = V::set1(-V::reduce_add(a1) / fn);
    const reg m2 = V::set1(-V::reduce_add(a2) / fn);
    for (int64_t c = 0; c < n; c += W) {
      const int cnt = n - c < W ? static_cast<int>(n - c) : W;
      const reg gv = load_n<V>(gr + c, cnt);
      const reg th = V::mul(V::add(load_n<V>(tr + c, cnt), neg_mean), rs);
      const reg gtv = V::mul(rs, V::fmadd(th, m2, V::add(V::mul(gv, load_n<V>(w + c, cnt)), m1)));
      store_n<V>(out + c, gtv, cnt);
      accumulate<V>(pw + c, V::mul(gv, th), cnt);
      accumulate<V>(pb + c, gv, cnt);
      if (ps != nullptr) accumulate<V>(ps + c, gtv, cnt);
    }
  }
}

// Rows [r0, r1) of the activation backward (epilogue_backward.h). GELU's derivative is
// Phi(u) + u phi(u) with Phi(u) = (1 + erf(u / sqrt 2)) / 2 and phi the normal density.
template <class V>
void activation_backward_rows(Act act, float* u, const float* gh, float* gu, int64_t r0,
                              int64_t r1, int64_t n, float* ps) {
  using reg = typename V::reg;
  constexpr int W = V::W;
  const bool gelu = act == Act::gelu;
  for (int64_t r = r0; r < r1; ++r) {
    float* ur = u + r * n;
    const float* ghr = gh + r * n;
    float* gur = gu + r * n;
    for (int64_t c = 0; c < n; c += W) {
      const int cnt = n - c < W ? static_cast<int>(n - c) : W;
      const reg uv = load_n<V>(ur + c, cnt);
      const reg ghv = load_n<V>(ghr + c, cnt);
      reg h, guv;
      if (gelu) {
        const reg half = V::set1(0.5f);
        const reg cdf = V::fmadd(erf_v<V>(V::mul(uv, V::set1(0.70710678118654752f))), half, half);
        const reg pdf = V::mul(simd::exp_nonpositive<V>(V::mul(V::mul(uv, uv), V::set1(-0.5f))),
                               V::set1(0.39894228040143268f));
        h = V::mul(uv, cdf);
        guv = V::mul(ghv, V::fmadd(uv, pdf, cdf));
      } else {
        h = V::max(V::zero(), uv);  // zero first: x86 max returns its second operand for a NaN
        guv = V::where_positive(uv, ghv);
      }
      store_n<V>(ur + c, h, cnt);
      store_n<V>(gur + c, guv, cnt);
      accumulate<V>(ps + c, guv, cnt);
    }
  }
}

}  // namespace
}  // namespace mbk::gemm
