// Internal: the per-ISA NoNorm kernels that nonorm.cc dispatches to. Each namespace's functions
// live in their own translation unit (nonorm_<isa>.cc) compiled with that ISA's flags.
#pragma once

#include <cstdint>

namespace mbk::ops {

template <typename T>
struct NoNormFwdArgs {
  const T* x;
  const T* res;  // null: no residual
  const T* w;
  const T* b;
  T* y;
  int64_t rows, cols;
  int num_threads;
};

template <typename T>
struct NoNormBwdArgs {
  const T* g;
  const T* x;
  const T* res;  // null: no residual
  const T* w;
  T* gx;
  T* gw;
  T* gb;
  // Workspace of nchunks * 2 * ld elements: per row chunk, its partial gw then its partial gb.
  T* ws;
  int64_t ld;  // >= cols, padded so chunks do not share cache lines
  int64_t rows, cols;
  int nchunks;  // 1 <= nchunks <= rows
  int num_threads;
};

namespace scalar {
void nonorm_forward_f32(const NoNormFwdArgs<float>& a);
void nonorm_backward_f32(const NoNormBwdArgs<float>& a);
void nonorm_forward_f64(const NoNormFwdArgs<double>& a);
void nonorm_backward_f64(const NoNormBwdArgs<double>& a);
}  // namespace scalar
namespace avx2 {
void nonorm_forward_f32(const NoNormFwdArgs<float>& a);
void nonorm_backward_f32(const NoNormBwdArgs<float>& a);
}  // namespace avx2
namespace avx512 {
void nonorm_forward_f32(const NoNormFwdArgs<float>& a);
void nonorm_backward_f32(const NoNormBwdArgs<float>& a);
}  // namespace avx512
namespace neon {
void nonorm_forward_f32(const NoNormFwdArgs<float>& a);
void nonorm_backward_f32(const NoNormBwdArgs<float>& a);
}  // namespace neon
namespace avx512_simde {  // nonorm_avx512.cc built through SIMDe (simd/avx512.h)
void nonorm_forward_f32(const NoNormFwdArgs<float>& a);
void nonorm_backward_f32(const NoNormBwdArgs<float>& a);
}  // namespace avx512_simde

}  // namespace mbk::ops
