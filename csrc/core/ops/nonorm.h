// NoNorm, MobileBERT's elementwise affine "normalization", forward and backward.
//
// All arrays are row-major and contiguous: x, res, y, g, gx are [rows, cols]; w, b, gw, gb are
// [cols]. The active ISA (cpu.h) picks the fp32 kernel; fp64 runs the portable scalar kernel.
#pragma once

#include <cstdint>

namespace mbk::ops {

// y[r, c] = (x[r, c] + res[r, c]) * w[c] + b[c]; res may be null (no residual).
void nonorm_forward(const float* x, const float* res, const float* w, const float* b, float* y,
                    int64_t rows, int64_t cols, int num_threads);
void nonorm_forward(const double* x, const double* res, const double* w, const double* b,
                    double* y, int64_t rows, int64_t cols, int num_threads);

// gx[r, c] = g[r, c] * w[c] (also the residual's gradient), gw[c] = sum_r g * (x + res),
// gb[c] = sum_r g; res may be null. The column sums are bitwise deterministic for a given
// num_threads: fixed row chunks, each summed by one thread, then added in chunk order.
void nonorm_backward(const float* g, const float* x, const float* res, const float* w, float* gx,
                     float* gw, float* gb, int64_t rows, int64_t cols, int num_threads);
void nonorm_backward(const double* g, const double* x, const double* res, const double* w,
                     double* gx, double* gw, double* gb, int64_t rows, int64_t cols,
                     int num_threads);

}  // namespace mbk::ops
