// Vector math written once over the SIMD interface (simd/<isa>.h's VecF32): each ISA's translation
// unit instantiates it with its own V (internal linkage, as in gemm_impl.h: one instantiation per
// set of compile flags).
#pragma once

namespace mbk::simd {
namespace {

// exp(x) for x <= 0 (softmax's s - max, GELU's -u²/2): x = n ln2 + r with |r| <= ln2 / 2, exp(r)
// by Cephes' expf polynomial, times 2^n; ~1 ulp. Below -87 the result (< 2e-38) is exp(-87)
// rather than a denormal or 0, which no caller can tell apart.
template <class V>
inline typename V::reg exp_nonpositive(typename V::reg x) {
  using reg = typename V::reg;
  x = V::max(V::set1(-87.0f), x);  // x second: a NaN stays NaN (x86 max returns operand 2)
  const reg n = V::round(V::mul(x, V::set1(1.44269504088896341f)));
  // ln2 split in two so n·ln2_hi is exact (Cody-Waite).
  reg r = V::fmadd(n, V::set1(-0.693359375f), x);
  r = V::fmadd(n, V::set1(2.12194440e-4f), r);
  reg p = V::set1(1.9875691500e-4f);
  p = V::fmadd(p, r, V::set1(1.3981999507e-3f));
  p = V::fmadd(p, r, V::set1(8.3334519073e-3f));
  p = V::fmadd(p, r, V::set1(4.1665795894e-2f));
  p = V::fmadd(p, r, V::set1(1.6666665459e-1f));
  p = V::fmadd(p, r, V::set1(5.0000001201e-1f));
  p = V::fmadd(p, V::mul(r, r), V::add(r, V::set1(1.0f)));
  return V::mul(p, V::pow2(n));
}

}  // namespace
}  // namespace mbk::simd
