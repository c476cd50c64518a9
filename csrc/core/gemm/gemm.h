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

// W [N, K] (element (n, k) at w[n * stride_n + k * stride_k]) and bias [N] (null: zeros) packed
// for isa's microkernel. Immutable once built; the buffer is 64-byte aligned.
class PackedWeights {
 public:
  PackedWeights(const float* w, int64_t stride_n, int64_t stride_k, const float* bias, int64_t n,
                int64_t k, Isa isa);

  int64_t n() const { return n_; }
  int64_t k() const { return k_; }
  int nr() const { return nr_; }
  Isa isa() const { return isa_; }
  int64_t panels() const { return (n_ + nr_ - 1) / nr_; }
  int64_t panel_stride() const { return (k_ + 1) * nr_; }  // floats per panel
  const float* data() const { return data_.get(); }
  size_t bytes() const { return static_cast<size_t>(panels() * panel_stride()) * sizeof(float); }

 private:
  struct Free {
    void operator()(float* p) const;
  };
  int64_t n_, k_;
  int nr_;
  Isa isa_;
  std::unique_ptr<float, Free> data_;
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
