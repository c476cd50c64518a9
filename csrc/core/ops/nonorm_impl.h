// NoNorm kernel templates over one vector type V (simd/<isa>.h); included only by the per-ISA
// translation units nonorm_<isa>.cc, each compiled with its ISA's flags.
//
// Forward: one row per OpenMP iteration; the row is walked in tiles of kUnroll vectors
// (4 x W columns), then single vectors, then one masked/partial vector for the tail. Per tile,
// x (+res), w, b and y occupy 4 registers each; w and b are reloaded per row from L1.
//
// Backward: rows are split into nchunks fixed chunks (one per thread), each chunk into blocks of
// kBwdRowBlock rows. For one block and one column tile of kUnroll vectors, w and the gw/gb
// accumulators stay in registers (3 x kUnroll: 12 ymm on AVX2) while the block's rows stream by
// (gx = g*w stored on the way); at the end of the block the accumulators are added to the
// chunk's partial sums. Chunks are then added in chunk order. This two-level sum is both
// deterministic for a given thread count and more accurate than one running sum per column.
//
// Keep this header free of std:: calls and non-template inline functions: every ISA's TU
// instantiates it with different flags, and a shared inline symbol compiled with -mavx512f could
// be the copy the linker keeps for the scalar path.
#pragma once

#include <cstdint>

#include "ops/nonorm_kernels.h"

namespace mbk::ops::detail {

// Below this many elements one thread beats an OpenMP fork/join.
constexpr int64_t kParallelMinElems = int64_t(1) << 15;
constexpr int kUnroll = 4;
constexpr int64_t kBwdRowBlock = 32;

template <class V, bool kRes>
inline void nonorm_fwd_row(const typename V::value_type* x, const typename V::value_type* r,
                           const typename V::value_type* w, const typename V::value_type* b,
                           typename V::value_type* y, int64_t cols) {
  using reg = typename V::reg;
  constexpr int W = V::W;
  int64_t c = 0;
  for (; c + kUnroll * W <= cols; c += kUnroll * W) {
    reg v[kUnroll];
    for (int u = 0; u < kUnroll; ++u) {
      v[u] = V::loadu(x + c + u * W);
      if (kRes) v[u] = V::add(v[u], V::loadu(r + c + u * W));
    }
    for (int u = 0; u < kUnroll; ++u)
      V::storeu(y + c + u * W, V::fmadd(v[u], V::loadu(w + c + u * W), V::loadu(b + c + u * W)));
  }
  for (; c + W <= cols; c += W) {
    reg v = V::loadu(x + c);
    if (kRes) v = V::add(v, V::loadu(r + c));
    V::storeu(y + c, V::fmadd(v, V::loadu(w + c), V::loadu(b + c)));
  }
  if (c < cols) {
    const int n = static_cast<int>(cols - c);
    reg v = V::load_partial(x + c, n);
    if (kRes) v = V::add(v, V::load_partial(r + c, n));
    V::store_partial(y + c, V::fmadd(v, V::load_partial(w + c, n), V::load_partial(b + c, n)), n);
  }
}

template <class V, bool kRes>
void nonorm_forward_rows(const NoNormFwdArgs<typename V::value_type>& a) {
  const int64_t rows = a.rows, cols = a.cols;
  const int nt = a.num_threads;
#pragma omp parallel for num_threads(nt) schedule(static) \
    if (nt > 1 && rows * cols >= kParallelMinElems)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = r * cols;
    nonorm_fwd_row<V, kRes>(a.x + o, kRes ? a.res + o : nullptr, a.w, a.b, a.y + o, cols);
  }
}

template <class V>
void nonorm_forward(const NoNormFwdArgs<typename V::value_type>& a) {
  if (a.res != nullptr)
    nonorm_forward_rows<V, true>(a);
  else
    nonorm_forward_rows<V, false>(a);
}

// One register tile: rows [r0, r1) x columns [c, c + U*W) (kTail: U == 1 and only n columns).
template <class V, bool kRes, int U, bool kTail>
inline void nonorm_bwd_tile(const NoNormBwdArgs<typename V::value_type>& a, int64_t r0,
                            int64_t r1, int64_t c, int n, typename V::value_type* pw,
                            typename V::value_type* pb) {
  using T = typename V::value_type;
  using reg = typename V::reg;
  constexpr int W = V::W;
  static_assert(!kTail || U == 1, "a tail tile is one partial vector");
  // Local copies: the stores to gx could otherwise alias the argument struct, forcing a reload
  // of every pointer per row.
  const T* g = a.g;
  const T* x = a.x;
  const T* res = a.res;
  T* gx = a.gx;
  const int64_t cols = a.cols;
  reg wv[U], aw[U], ab[U];
  for (int u = 0; u < U; ++u) {
    wv[u] = kTail ? V::load_partial(a.w + c, n) : V::loadu(a.w + c + u * W);
    aw[u] = V::zero();
    ab[u] = V::zero();
  }
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t o = r * cols + c;
    for (int u = 0; u < U; ++u) {
      const int64_t ou = o + u * W;
      reg gv = kTail ? V::load_partial(g + ou, n) : V::loadu(g + ou);
      reg xv = kTail ? V::load_partial(x + ou, n) : V::loadu(x + ou);
      if (kRes) xv = V::add(xv, kTail ? V::load_partial(res + ou, n) : V::loadu(res + ou));
      if (kTail)
        V::store_partial(gx + ou, V::mul(gv, wv[u]), n);
      else
        V::storeu(gx + ou, V::mul(gv, wv[u]));
      aw[u] = V::fmadd(gv, xv, aw[u]);
      ab[u] = V::add(ab[u], gv);
    }
  }
  for (int u = 0; u < U; ++u) {
    const int64_t cu = c + u * W;
    if (kTail) {
      V::store_partial(pw + cu, V::add(V::load_partial(pw + cu, n), aw[u]), n);
      V::store_partial(pb + cu, V::add(V::load_partial(pb + cu, n), ab[u]), n);
    } else {
      V::storeu(pw + cu, V::add(V::loadu(pw + cu), aw[u]));
      V::storeu(pb + cu, V::add(V::loadu(pb + cu), ab[u]));
    }
  }
}

template <class V, bool kRes>
void nonorm_backward_chunks(const NoNormBwdArgs<typename V::value_type>& a) {
  using T = typename V::value_type;
  constexpr int W = V::W;
  const int64_t rows = a.rows, cols = a.cols;
  const int nchunks = a.nchunks, nt = a.num_threads;
  // Chunk k always covers the same rows and writes only its own partial sums, whichever thread
  // runs it: that is what makes the result independent of OpenMP's scheduling.
#pragma omp parallel for num_threads(nt) schedule(static) \
    if (nt > 1 && rows * cols >= kParallelMinElems)
  for (int k = 0; k < nchunks; ++k) {
    const int64_t r0 = rows * k / nchunks, r1 = rows * (k + 1) / nchunks;
    T* pw = a.ws + int64_t(2) * k * a.ld;
    T* pb = pw + a.ld;
    for (int64_t c = 0; c < cols; ++c) pw[c] = pb[c] = T(0);
    for (int64_t rb = r0; rb < r1; rb += kBwdRowBlock) {
      const int64_t re = rb + kBwdRowBlock < r1 ? rb + kBwdRowBlock : r1;
      int64_t c = 0;
      for (; c + kUnroll * W <= cols; c += kUnroll * W)
        nonorm_bwd_tile<V, kRes, kUnroll, false>(a, rb, re, c, W, pw, pb);
      for (; c + W <= cols; c += W) nonorm_bwd_tile<V, kRes, 1, false>(a, rb, re, c, W, pw, pb);
      if (c < cols)
        nonorm_bwd_tile<V, kRes, 1, true>(a, rb, re, c, static_cast<int>(cols - c), pw, pb);
    }
  }
  // Fixed-order reduction over chunks: gw = sum_k pw_k, gb = sum_k pb_k.
  for (int half = 0; half < 2; ++half) {
    T* out = half == 0 ? a.gw : a.gb;
    const T* base = a.ws + half * a.ld;
    int64_t c = 0;
    for (; c + W <= cols; c += W) {
      typename V::reg s = V::loadu(base + c);
      for (int k = 1; k < nchunks; ++k) s = V::add(s, V::loadu(base + int64_t(2) * k * a.ld + c));
      V::storeu(out + c, s);
    }
    if (c < cols) {
      const int n = static_cast<int>(cols - c);
      typename V::reg s = V::load_partial(base + c, n);
      for (int k = 1; k < nchunks; ++k)
        s = V::add(s, V::load_partial(base + int64_t(2) * k * a.ld + c, n));
      V::store_partial(out + c, s, n);
    }
  }
}

template <class V>
void nonorm_backward(const NoNormBwdArgs<typename V::value_type>& a) {
  if (a.res != nullptr)
    nonorm_backward_chunks<V, true>(a);
  else
    nonorm_backward_chunks<V, false>(a);
}

}  // namespace mbk::ops::detail
