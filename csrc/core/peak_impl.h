// The FMA-throughput loop over one vector type V (simd/<isa>.h); included only by the per-ISA
// translation units peak_<isa>.cc, each compiled with its ISA's flags.
//
// kAcc accumulators live in registers and each round updates every one with acc = acc * a + b:
// the updates of one round are independent, so kAcc must cover FMA latency x FMA ports (4 x 2 = 8
// on current x86 and big ARM cores) for the loop to be throughput-bound; a and b take the two
// remaining registers. a < 1 and small b keep the values bounded and normal (no denormal stalls).
// Like nonorm_impl.h: templates only, no std:: calls (every ISA's TU instantiates this header).
#pragma once

#include <cstdint>

namespace mbk::peak::detail {

template <class V, int kAcc>
int64_t fma_block(int64_t iters, typename V::value_type* sink) {
  using T = typename V::value_type;
  using reg = typename V::reg;
  reg acc[kAcc];
  for (int i = 0; i < kAcc; ++i) acc[i] = V::set1(T(1) + T(i) * T(1e-3));
  const reg a = V::set1(T(0.999999));
  const reg b = V::set1(T(1e-6));
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < kAcc; ++i) acc[i] = V::fmadd(acc[i], a, b);
  reg s = acc[0];
  for (int i = 1; i < kAcc; ++i) s = V::add(s, acc[i]);
  // Lanes summed through memory, not V::reduce_add: GCC 12 warns inside _mm512_reduce_add_ps.
  T lanes[V::W];
  V::storeu(lanes, s);
  T total = T(0);
  for (int l = 0; l < V::W; ++l) total += lanes[l];
  *sink = total;
  return iters * kAcc * V::W * 2;
}

}  // namespace mbk::peak::detail
