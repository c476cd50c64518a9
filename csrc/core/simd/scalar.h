// Plain C++ "vectors" of width 1: the portable baseline and the fp64 path. The same interface as
// avx2.h / avx512.h / neon.h, so one kernel template serves every ISA.
#pragma once

#include <cstdint>

#include "dropout.h"

namespace mbk::simd::scalar {

template <typename T>
struct VecT {
  using value_type = T;
  using reg = T;
  static constexpr int W = 1;

  static reg zero() { return T(0); }
  static reg set1(T v) { return v; }
  static reg load(const T* p) { return *p; }
  static reg loadu(const T* p) { return *p; }
  static void store(T* p, reg v) { *p = v; }
  static void storeu(T* p, reg v) { *p = v; }
  // n in [0, W): lanes at and beyond n read as 0 and are not written.
  static reg load_partial(const T* p, int n) { return n > 0 ? *p : T(0); }
  static void store_partial(T* p, reg v, int n) {
    if (n > 0) *p = v;
  }
  static reg add(reg a, reg b) { return a + b; }
  static reg mul(reg a, reg b) { return a * b; }
  static reg max(reg a, reg b) { return a > b ? a : b; }
  static reg round(reg x) { return __builtin_nearbyintf(x); }  // to nearest, ties to even
  // 2^n for integral n in [-126, 127]: n + 127 in the exponent field.
  static reg pow2(reg n) {
    const auto bits = static_cast<unsigned>(static_cast<int>(n) + 127) << 23;
    float out;
    __builtin_memcpy(&out, &bits, sizeof out);
    return out;
  }
  // a * b + c
  static reg fmadd(reg a, reg b, reg c) { return a * b + c; }
  static T reduce_add(reg v) { return v; }
  // Dropout (dropout.h) on the one element base + offsets[0] (uint32, wrapping).
  static reg dropout_multiplier(uint32_t base, const int32_t* offsets, uint32_t key,
                                uint32_t threshold, float scale) {
    return mix32((base + static_cast<uint32_t>(offsets[0])) ^ key) >= threshold ? T(scale) : T(0);
  }
};

using VecF32 = VecT<float>;
using VecF64 = VecT<double>;

}  // namespace mbk::simd::scalar
