// ffn_stack forward: MobileBERT's stacked FFNs, for each i
//   x = N_i(act(x W1ᵢᵀ + b1ᵢ) W2ᵢᵀ + b2ᵢ + x)
// Every row goes through all FFNs independently of the others, so each thread owns a range of
// rows and pushes it, one row tile at a time, through the whole stack without synchronizing: the
// tile's intermediate act(x W1ᵢᵀ + b1ᵢ) (tile rows x 512 floats) lives in a per-thread buffer that
// stays in L2, and x is updated in place in the output (NoNorm at store / LayerNorm per row tile).
#pragma once

#include <cstdint>

#include "gemm/gemm.h"

namespace mbk::ops {

struct FfnWeights {
  const gemm::PackedWeights* intermediate;  // W1 [inter, width] with b1 packed in
  const gemm::PackedWeights* output;        // W2 [width, inter] with b2 packed in
  const float* norm_weight;                 // [width]
  const float* norm_bias;                   // [width]
  float eps;                                // layernorm only
};

// What a training forward keeps so that the backward needs no GEMM of the forward again (ReLU
// only: relu'(u) reads off as h > 0; every FFN the same inter). Contiguous, FFN-major:
//   x [count - 1, rows, width]  the inputs of FFNs 1.. (FFN 0's input is the op's x)
//   h [count, rows, inter]      relu(x W1ᵀ + b1)
//   t [count, rows, width]      the pre-norm sums h W2ᵀ + b2 + x
struct FfnSaved {
  float* x;
  float* h;
  float* t;
};

// x [rows, width] (row stride ldx) -> y [rows, width] (row stride ldy; y may not overlap x).
// All weights packed for one ISA; act is relu or gelu, norm nonorm or layernorm. With `saved`
// (act relu, ldy == width) the intermediates are written there instead of a per-thread tile
// buffer; the output is the same bit for bit. Throws std::invalid_argument on inconsistent
// widths or ISAs.
void ffn_stack_forward(const float* x, int64_t ldx, int64_t rows, const FfnWeights* ffns,
                       int count, gemm::Act act, gemm::Norm norm, float* y, int64_t ldy,
                       int num_threads, const FfnSaved* saved = nullptr);

}  // namespace mbk::ops
