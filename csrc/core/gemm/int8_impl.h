// The int8 GEMM's kernel templates (gemm.h, "int8"), included after gemm_impl.h by the per-ISA
// translation units that have int8 kernels. Two parameters: V, the ISA's fp32 vector (the row
// quantization and the epilogue), and Q, its int8 dot product:
//
//   Q::W == V::W          int32 lanes per vector, one output column per lane
//   Q::G, Q::elem         k per lane of a group, as G elements of 4 / G bytes (int8 or int16; uint8
//                         for A when offset is 128, the panel's bytes being int8 all the same)
//   Q::offset             A's elements hold q + offset: 0, or 128 for a u8 x s8 dot product
//   Q::wreg, Q::acc       G elements of one column per lane; int32 accumulators
//   Q::init(p)            W int32 of the panel's comp row: the accumulators' start (gemm.h)
//   Q::load(p)            W columns x G k of a packed group (W * 4 bytes, aligned to them)
//   Q::broadcast(p)       G consecutive elements of one row of A into every lane
//   Q::dot(acc, a, w)     acc[l] + sum_j a[j] w[l][j]: exact for |a - offset| <= 127 and |w| up to
//                         the kernel's weight_max (127, or 63 for a narrow kernel)
//   Q::to_float(acc)      the accumulators as V::reg
//   Q::keep(acc)          a register-allocation hint (a no-op but on AVX2)
//   Q::store(p, y)        W floats, integral and within [-127, 127], as W elements y + offset at p
//   Q::operand(acc)       an accumulator's bytes as an A operand (dot_block's loop only)
//
// Microkernel ukernel_int8<V, Q, MR, NV, NR>: MR x (NV * W) int32 accumulators over ceil(K / G)
// groups of G k, started from comp (-offset * sum_k w: the offset's products cancel, the sums are
// the same integers on every kernel); per group NV loads of the panel, MR broadcasts of quantized
// A, MR * NV dots. Then acc * (s_a[m] * scale[n]) + bias[n] in fp32 and the fp32 epilogue
// (store_tile). The rows of a row block are quantized right before it runs (quantize_row), into a
// stack buffer that stays in L1 while every panel streams past it: activations are never stored
// in int8 elsewhere.
#pragma once

#include <cstdint>

#include "gemm/gemm_impl.h"
#include "gemm/gemm_kernels.h"

namespace mbk::gemm {
namespace {

// One row of A quantized (gemm.h, "int8"): q [kp] (zeros past k), returns s_a.
template <class V, class Q>
float quantize_row(const float* x, const float* smooth, int64_t k, int64_t kp, typename Q::elem* q) {
  using reg = typename V::reg;
  constexpr int W = V::W;
  const int64_t kfull = k / W * W;
  const int tail = static_cast<int>(k - kfull);
  const reg minus = V::set1(-1.0f);
  // nonfinite sums v * 0: 0 unless some v is inf or NaN (max alone can drop a NaN).
  reg amax = V::zero(), nonfinite = V::zero();
  for (int64_t c = 0; c < kfull; c += W) {
    const reg v = V::mul(V::loadu(x + c), V::loadu(smooth + c));
    amax = V::max(amax, V::max(v, V::mul(v, minus)));
    nonfinite = V::add(nonfinite, V::mul(v, V::zero()));
  }
  if (tail > 0) {
    const reg v = V::mul(V::load_partial(x + kfull, tail), V::load_partial(smooth + kfull, tail));
    amax = V::max(amax, V::max(v, V::mul(v, minus)));
    nonfinite = V::add(nonfinite, V::mul(v, V::zero()));
  }
  float lanes[W], flags[W];
  V::storeu(lanes, amax);
  V::storeu(flags, nonfinite);
  float m = 0.0f, bad = 0.0f;
  for (int l = 0; l < W; ++l) {
    m = lanes[l] > m ? lanes[l] : m;
    bad += flags[l];
  }
  constexpr auto zero = static_cast<typename Q::elem>(Q::offset);  // q = 0
  if (!(bad == 0.0f) || m == 0.0f) {  // inf or NaN in the row (its outputs NaN), or all zeros
    for (int64_t c = 0; c < kp; ++c) q[c] = zero;
    return m == 0.0f && bad == 0.0f ? 0.0f : __builtin_nanf("");
  }
  const reg inv = V::set1(127.0f / m);
  for (int64_t c = 0; c < kfull; c += W)
    Q::store(q + c, V::mul(V::mul(V::loadu(x + c), V::loadu(smooth + c)), inv));
  if (tail > 0) {
    typename Q::elem last[W];
    Q::store(last, V::mul(V::mul(V::load_partial(x + kfull, tail),
                                      V::load_partial(smooth + kfull, tail)), inv));
    for (int l = 0; l < tail; ++l) q[kfull + l] = last[l];
  }
  for (int64_t c = k; c < kp; ++c) q[c] = zero;
  return m / 127.0f;
}

template <class Q>
using Int8UKernel = void (*)(int64_t groups, const typename Q::elem* a, int64_t lda, const float* sa,
                             const unsigned char* panel, float* c, int64_t ldc, int nc,
                             const TileEpilogue& e);

// C[0:MR, 0:nc] = epilogue(dequantized A[0:MR] W_panelᵀ + bias); nc in ((NV - 1) W, NV W].
template <class V, class Q, int MR, int NV, int NR>
void ukernel_int8(int64_t groups, const typename Q::elem* a, int64_t lda, const float* sa,
                  const unsigned char* panel, float* c, int64_t ldc, int nc, const TileEpilogue& e) {
  using reg = typename V::reg;
  constexpr int W = V::W;
  static_assert(Q::W == W && NV * W <= NR, "one column per lane; the tile is at most one panel wide");
  const int32_t* comp = reinterpret_cast<const int32_t*>(panel + 2 * NR * sizeof(float));
  typename Q::acc acc[MR][NV];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[m][v] = Q::init(comp + v * W);
  using E = typename Q::elem;
  constexpr int G = Q::G;
  const E* w = reinterpret_cast<const E*>(panel + 3 * NR * sizeof(float));
#pragma GCC unroll 1
  for (int64_t g = 0; g < groups; ++g) {
    typename Q::wreg b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = Q::load(w + v * W * G);
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      const typename Q::wreg am = Q::broadcast(a + m * lda + G * g);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[m][v] = Q::dot(acc[m][v], am, b[v]);
    }
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) Q::keep(acc[m][v]);
    w += NR * G;
  }
  const float* bias = reinterpret_cast<const float*>(panel);
  const float* scale = bias + NR;
  reg y[MR][NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    const reg sc = V::load(scale + v * W), bi = V::load(bias + v * W);
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m)
      y[m][v] = V::fmadd(Q::to_float(acc[m][v]), V::mul(V::set1(sa[m]), sc), bi);
  }
  store_tile<V, MR, NV>(y, c, ldc, nc, e);
}

template <class V, class Q, int NR>
struct Int8Kernels {
  template <int M, int NV>
  static Int8UKernel<Q> get() { return &ukernel_int8<V, Q, M, NV, NR>; }
};

// IsaGemm::run_int8 for the MR x (NV * W) int8 microkernel family: run_rows with each row block
// quantized first.
template <class V, class Q, int MR, int NV>
void run_rows_int8(const GemmArgs& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  constexpr int W = V::W, NR = NV * W;
  constexpr int G = Q::G;
  const int64_t kp = (g.k + G - 1) / G * G;
  const int64_t panels = (g.n + NR - 1) / NR;
  const int64_t pstride = (3 * NR + kp / G * NR) * 4;  // bytes: bias, scale, comp, kp / G groups
  const Epilogue& ep = g.ep;
  const bool nonorm = ep.norm == Norm::nonorm;
  const bool layernorm = ep.norm == Norm::layernorm && p0 == 0 && p1 == panels;
  alignas(64) typename Q::elem aq[MR * kMaxInt8K];
  float sa[MR];
  for (int64_t m = m0; m < m1; m += MR) {
    const int mr = m1 - m < MR ? static_cast<int>(m1 - m) : MR;
    for (int r = 0; r < mr; ++r)
      sa[r] = quantize_row<V, Q>(g.a + (m + r) * g.lda, g.smooth, g.k, kp, aq + r * kp);
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t col = p * NR;
      const int nc = g.n - col < NR ? static_cast<int>(g.n - col) : NR;
      const int nv = (nc + W - 1) / W;
      const Int8UKernel<Q> uk = mr == MR && nv == NV
                                 ? &ukernel_int8<V, Q, MR, NV, NR>
                                 : pick_ukernel<Int8Kernels<V, Q, NR>, MR, NV>(mr, nv);
      uk(kp / G, aq, kp, sa, g.q8 + p * pstride, g.c + m * g.ldc + col, g.ldc, nc,
         tile_epilogue(ep, m, col, nonorm));
    }
    if (layernorm)
      layernorm_rows<V>(g.c + m * g.ldc, g.ldc, mr, g.n, ep.norm_weight, ep.norm_bias, ep.eps);
  }
}

// The int8 multiply-accumulate throughput of Q::dot, measured like the fp32 FMA peak (peak_impl.h):
// kAcc independent accumulators, each round one dot per accumulator. Each dot's A operand is its
// own accumulator's bytes from the round before, so every product is new: AVX2's vpmaddubsw and
// vpmaddwd and NEON's smull do not read the accumulator, and with a constant A a compiler would
// hoist them out of the loop. The sums wrap (integers: defined, and nothing reads them but sink).
// Returns the multiply-accumulates executed: W lanes x G products per dot.
template <class V, class Q, int kAcc>
int64_t dot_block(int64_t iters, float* sink) {
  alignas(64) int32_t start[Q::W];
  alignas(64) typename Q::elem wbytes[Q::W * 4 / sizeof(typename Q::elem)];
  for (int l = 0; l < Q::W * 4 / static_cast<int>(sizeof(typename Q::elem)); ++l)
    wbytes[l] = static_cast<typename Q::elem>(1 + l % 7);
  for (int l = 0; l < Q::W; ++l) start[l] = l;
  // Every loop over the accumulators unrolled: an array indexed at run time stays in memory.
  typename Q::acc acc[kAcc];
#pragma GCC unroll 32
  for (int i = 0; i < kAcc; ++i) acc[i] = Q::init(start);
  const typename Q::wreg w = Q::load(wbytes);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 32
    for (int i = 0; i < kAcc; ++i) acc[i] = Q::dot(acc[i], Q::operand(acc[i]), w);
#pragma GCC unroll 32
    for (int i = 0; i < kAcc; ++i) Q::keep(acc[i]);  // as in the microkernel: no copies, no spills
  }
  typename V::reg s = Q::to_float(acc[0]);
#pragma GCC unroll 32
  for (int i = 1; i < kAcc; ++i) s = V::add(s, Q::to_float(acc[i]));
  float lanes[V::W];
  V::storeu(lanes, s);
  float total = 0.0f;
  for (int l = 0; l < V::W; ++l) total += lanes[l];
  *sink = total;
  return iters * kAcc * Q::W * Q::G;
}

// Accumulators for dot_block: enough independent chains to cover the dot's latency on both multiply
// ports, within the register file (16 ymm: 12 + w + the products; 32 zmm or q registers: 24).
template <class V>
constexpr int kDotChains = V::W == 1 ? 4 : V::W == 8 ? 12 : 24;

// The IsaGemm entry of that kernel family: the tile and what the packer needs from Q (weight_max:
// the largest |w| Q::dot sums exactly).
template <class V, class Q, int MR, int NV>
Int8Gemm int8_gemm(const char* name, int weight_max = 127) {
  return {{MR, NV * V::W, name}, &run_rows_int8<V, Q, MR, NV>, Q::G, Q::offset, weight_max,
          &dot_block<V, Q, kDotChains<V>>};
}

}  // namespace
}  // namespace mbk::gemm
