// Packed-weight fp32 GEMM with fused epilogues: C = epilogue(A Wᵀ + bias), the GEMM behind
// linear_norm and ffn_stack. A Linear's weight W is [N, K] (out x in) as torch stores it.
//
// - Weights are packed once for one ISA's microkernel (PackedWeights): column panels of NR
//   outputs, each panel [1 + K][NR] with the bias as its first row, so the microkernel starts its
//   accumulators from the bias and streams W contiguously.
// - Microkernels are one register tile on one ISA, named f32_gemm_<MR>x<NR>__<isa> (tile());
//   callers pack for the active ISA (cpu.h, chosen at run time) and gemm() runs the microkernel
//   of the ISA the weights were packed for. M, N and K need not be multiples of the tile:
//   smaller tiles (fewer rows, fewer vectors) handle the edges, the last panel is zero-padded.
// - The epilogue is applied at store while the tile is still in registers: act(acc + bias)
//   [+ residual], then NoNorm (* w + b per column). LayerNorm needs the whole output row: it runs
//   as a second pass over each finished row tile while that is still in L1.
// - Threads: OpenMP over row blocks (columns too when there are few rows), num_threads explicit.
//
// int8 (inference): weights packed in their int8 form (Int8Weight: symmetric per output channel,
// values in [-127, 127]) run the same gemm() and every op built on it. Each row of A is quantized
// as its row block is read: with m = smooth[k] (1 without smooth),
//     amax = max_k |a[k] m[k]|,  q[k] = round_half_even(a[k] m[k] * (127 / amax)),  s_a = amax / 127
// (q = 0, s_a = 0 for a zero row; s_a = NaN, so NaN outputs, for a row holding inf or NaN), the
// int8 products are summed exactly in int32 (every ISA gets the same integers), and the
// accumulator enters the fp32 epilogue as acc * (s_a * scale[n]) + bias[n]. Microkernels are
// named q8_gemm_<MR>x<NR>__<isa>, q8w7_gemm_... for those that take 7-bit weights only.
// Kernels whose dot product multiplies u8 by s8 (VNNI's vpdpbusd, AVX2's vpmaddubsw) take A as
// q + 128 and start their accumulators from the panel's comp[n] = -128 * sum_k w[n, k] (exact in
// int32, made at pack time), so their sums are the same integers. An ISA may have up to three int8
// kernels, chosen at pack time (Int8Variant): its dot-product extension's where the CPU has it
// (NEON's FEAT_DotProd, AVX-512 VNNI; cpu.h), a faster one for weights in [-63, 63] (AVX2), and the
// one for any CPU and any weights.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "cpu.h"

namespace mbk::gemm {

enum class Act : int { none, relu, gelu };  // gelu: the erf form, 0.5 x (1 + erf(x / sqrt 2))
enum class Norm : int { none, nonorm, layernorm };

// One ISA's microkernel tile: MR rows x NR columns of C held in registers.
struct Tile {
  int mr, nr;
  const char* name;  // e.g. "f32_gemm_6x16__avx2"
};
// Throws std::invalid_argument if isa is not compiled into this build.
Tile tile(Isa isa);
// An ISA's int8 kernels: base runs on every CPU of the ISA and any int8 weights; dot needs its
// dot-product extension (NEON: sdot; AVX-512: VNNI's vpdpbusd; int8_dot_supported in cpu.h);
// narrow takes weights in [-63, 63] only (7 bits: AVX2's vpmaddubsw, whose int16 sums of two
// u8 x s8 products stay below 2 * 255 * 63 = 32130 and so never saturate). best: dot where this
// CPU has it, else narrow where the ISA has one and the weights fit, else base (what production
// uses; the tests name each variant to run them all).
enum class Int8Variant : int { best, base, dot, narrow };
// The int8 microkernel of isa, best resolved for weights whose largest |w| is weight_max;
// std::invalid_argument if isa has none of that variant or this CPU cannot run it.
Tile int8_tile(Isa isa, Int8Variant variant = Int8Variant::best, int weight_max = 127);

// The largest |w| of symmetric int8 weights of weight_bits bits (8: 127; 7: 63, the narrow kernels').
constexpr int int8_weight_max(int weight_bits) { return (1 << (weight_bits - 1)) - 1; }

// The largest K the int8 GEMM takes: a row block of quantized A lives on the stack.
constexpr int64_t kMaxInt8K = 8192;

// A weight's int8 form: W[n, k] ~ w[n * stride_n + k * stride_k] * scale[n], w in [-127, 127]
// (-128 is rejected). smooth [K] or null: each activation column k is multiplied by smooth[k]
// before its row is quantized (SmoothQuant: the columns of w carry 1 / smooth).
struct Int8Weight {
  const int8_t* w;
  int64_t stride_n, stride_k;
  const float* scale;
  const float* smooth = nullptr;
};

// W [N, K] (element (n, k) at w[n * stride_n + k * stride_k]) and bias [N] (null: zeros) packed
// for isa's microkernel. Immutable once built; the buffer is 64-byte aligned.
//
// fp32 panels: [1 + K][NR] floats, the bias first. int8 panels: bias [NR] and scale [NR] floats,
// comp [NR] int32 (the accumulators' start: -a_offset * sum_k w[n, k], 0 but for the u8 x s8
// kernels), then ceil(K / G) groups of [NR][G] (G consecutive k of one column, 4 bytes; K
// zero-padded): G = 4 int8 for the kernels with 4-way int8 dot products, G = 2 int8 widened to
// int16 for AVX2's vpmaddwd (the one exact int8 multiply that keeps both of its multiply ports
// busy) and AVX-512BW's without VNNI.
class PackedWeights {
 public:
  PackedWeights(const float* w, int64_t stride_n, int64_t stride_k, const float* bias, int64_t n,
                int64_t k, Isa isa);
  // The int8 form for isa's int8 kernel of that variant (best: chosen for these weights' range);
  // std::invalid_argument if isa has no such kernel this CPU runs, k > kMaxInt8K, a scale is not
  // finite and positive, a weight is -128, or the variant is narrow and a weight is beyond 63.
  PackedWeights(const Int8Weight& w, const float* bias, int64_t n, int64_t k, Isa isa,
                Int8Variant variant = Int8Variant::best);

  bool int8() const { return group_ > 0; }
  Int8Variant int8_variant() const { return variant_; }  // base, dot or narrow (int8 only)
  int64_t n() const { return n_; }
  int64_t k() const { return k_; }
  int group() const { return group_; }  // int8: k per 4-byte group (G above); fp32: 0
  int64_t k_padded() const { return int8() ? (k_ + group_ - 1) / group_ * group_ : k_; }
  int mr() const { return mr_; }  // rows of the microkernel tile (drivers split rows by it)
  int nr() const { return nr_; }
  Isa isa() const { return isa_; }
  int64_t panels() const { return (n_ + nr_ - 1) / nr_; }
  // fp32: floats per panel; int8: bytes per panel.
  int64_t panel_stride() const {
    return int8() ? 3 * nr_ * 4 + k_padded() / group_ * nr_ * 4 : (k_ + 1) * nr_;
  }
  const float* data() const { return reinterpret_cast<const float*>(data_.get()); }
  const unsigned char* bytes_data() const { return data_.get(); }
  // int8: the per-column activation multipliers (all 1 without smooth); null for fp32.
  const float* smooth() const { return smooth_.get(); }
  size_t bytes() const {
    return static_cast<size_t>(panels() * panel_stride()) * (int8() ? 1 : sizeof(float));
  }

 private:
  struct Free {
    void operator()(void* p) const;
  };
  void allocate();
  int64_t n_, k_;
  int mr_, nr_;
  int group_ = 0;
  Int8Variant variant_ = Int8Variant::best;
  Isa isa_;
  std::unique_ptr<unsigned char, Free> data_;
  std::unique_ptr<float, Free> smooth_;  // int8 only
};

// How many PackedWeights this process has built (tests use it to prove a cache hit).
uint64_t pack_count();

struct Epilogue {
  Act act = Act::none;
  // [M, N] added after act, row stride ld_residual; may be C itself (each element is read
  // before it is written).
  const float* residual = nullptr;
  int64_t ld_residual = 0;
  Norm norm = Norm::none;
  const float* norm_weight = nullptr;  // [N]; required unless norm is none
  const float* norm_bias = nullptr;    // [N]
  float eps = 0.0f;                    // layernorm only
};

// C[m, :] = epilogue(A[m, :] Wᵀ + bias) for m < M, on the microkernels of the ISA w was packed
// for. A is row-major with row stride lda, C with ldc >= N; C may overlap neither A nor the
// norm parameters (the residual may be C itself).
void gemm(const float* a, int64_t lda, int64_t m, const PackedWeights& w, float* c, int64_t ldc,
          const Epilogue& ep, int num_threads);

}  // namespace mbk::gemm
