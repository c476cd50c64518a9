// Internal: the per-ISA GEMM kernels that gemm.cc and the fused ops (ops/linear_norm.cc,
// ops/ffn_stack.cc) drive. Each ISA's functions live in their own translation unit
// (gemm_<isa>.cc) compiled with that ISA's flags; the drivers are compiled with baseline flags and
// call them through IsaGemm, so they hold no ISA-specific code themselves.
#pragma once

#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu.h"
#include "gemm/gemm.h"

namespace mbk::gemm {

// One call's operands: A [M, K] (row stride lda), packed W (gemm.h: fp32 panels at w, or int8
// panels at q8 with the activation multipliers smooth), C [M, N] (row stride ldc), the epilogue.
struct GemmArgs {
  const float* a;
  int64_t lda;
  const float* w;
  int64_t k, n;
  float* c;
  int64_t ldc;
  Epilogue ep;
  const unsigned char* q8 = nullptr;  // int8 weights: w is null
  const float* smooth = nullptr;
  void (*run_q8)(const GemmArgs& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) = nullptr;  // q8's kernel
};

using RunFn = void (*)(const GemmArgs& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1);

// One int8 microkernel family (gemm.h, "int8"): what the packer needs to know to lay out its panels
// and what runs them. int8_impl.h's int8_gemm() fills it from the kernel's Q.
struct Int8Gemm {
  Tile tile{0, 0, nullptr};
  RunFn run = nullptr;  // null: no such kernel
  int group = 4;        // k per 4-byte group of a packed panel
  int a_offset = 0;     // activations stored as q + a_offset (128: u8 for u8 x s8 dot products)
  int weight_max = 127;  // the largest |w| it sums exactly (63: the narrow kernels, gemm.h)
  // Its dot product's throughput loop (int8_impl.h dot_block): returns the multiply-accumulates.
  int64_t (*dot_block)(int64_t iters, float* sink) = nullptr;
};

struct IsaGemm {
  Tile tile;
  // Rows [m0, m1) x column panels [p0, p1) of C on the calling thread, row block by row block
  // (MR rows against every panel). The epilogue is applied at store; LayerNorm too when the
  // panels are all of them (each row block is normalized right after its last panel, still in L1),
  // otherwise the caller runs layernorm_rows once the rows are complete.
  void run(const GemmArgs& g, int64_t m0, int64_t m1, int64_t p0, int64_t p1) const {
    (g.q8 != nullptr ? g.run_q8 : run_f32)(g, m0, m1, p0, p1);
  }
  RunFn run_f32;
  // y[r, :] = LayerNorm(y[r, :]) * w + b in place for r < rows (row stride ldy), n columns.
  void (*layernorm_rows)(float* y, int64_t ldy, int64_t rows, int64_t n, const float* w,
                         const float* b, float eps);
  // The backward of the epilogues (epilogue_backward.h) over rows [r0, r1) of contiguous [rows, n]
  // arrays, adding one row chunk's column sums into pw, pb and ps (ps may be null for LayerNorm).
  void (*layernorm_backward_rows)(const float* g, const float* t, const float* w, float eps,
                                  float* gt, int64_t r0, int64_t r1, int64_t n, float* pw,
                                  float* pb, float* ps);
  void (*activation_backward_rows)(Act act, float* u, const float* gh, float* gu, int64_t r0,
                                   int64_t r1, int64_t n, float* ps);
  // The int8 GEMMs (gemm.h, Int8Variant; run() takes the one int8 weights were packed for): int8 runs
  // on every CPU of the ISA, int8_dot needs the ISA's dot-product extension (int8_dot_supported),
  // int8_narrow takes weights in [-63, 63] only. run null: no such kernel.
  Int8Gemm int8{};
  Int8Gemm int8_dot{};
  Int8Gemm int8_narrow{};
};

// The kernels of isa (std::invalid_argument if not compiled).
const IsaGemm& isa_gemm(Isa isa);
// isa's int8 kernel of that variant, best resolved for this CPU and weights whose largest |w| is
// weight_max; std::invalid_argument if isa has none or this CPU cannot run it. (The packer checks
// that the weights fit the kernel.)
const Int8Gemm& int8_gemm(Isa isa, Int8Variant variant, int weight_max = 127);

// The operands of C = epilogue(A Wᵀ + bias) for a packed W.
inline GemmArgs gemm_args(const float* a, int64_t lda, const PackedWeights& w, float* c,
                          int64_t ldc, const Epilogue& ep) {
  if (w.int8())
    return {a, lda, nullptr, w.k(), w.n(), c, ldc, ep, w.bytes_data(), w.smooth(),
            int8_gemm(w.isa(), w.int8_variant()).run};
  return {a, lda, w.data(), w.k(), w.n(), c, ldc, ep};
}

// Runs fn(thread_id, thread_count) on num_threads OpenMP threads (fewer if the runtime gives
// fewer; the count fn sees is the real one). fn may use `#pragma omp barrier`.
template <class F>
void parallel(int num_threads, F&& fn) {
#ifdef _OPENMP
  if (num_threads > 1) {
#pragma omp parallel num_threads(num_threads)
    fn(omp_get_thread_num(), omp_get_num_threads());
    return;
  }
#endif
  fn(0, 1);
}

namespace scalar {
const IsaGemm& f32_gemm();
}
namespace avx2 {
const IsaGemm& f32_gemm();
}
namespace avx512 {
const IsaGemm& f32_gemm();
const Int8Gemm& q8_gemm_vnni();  // gemm_avx512_vnni.cc (compiled with VNNI)
}
namespace neon {
const IsaGemm& f32_gemm();
const Int8Gemm& q8_gemm();      // gemm_neon_int8.cc
const Int8Gemm& q8_gemm_dot();  // gemm_neon_dot.cc (compiled with the dot product)
}
namespace avx512_simde {  // gemm_avx512.cc and gemm_avx512_vnni.cc built through SIMDe (simd/avx512.h)
const IsaGemm& f32_gemm();
const Int8Gemm& q8_gemm_vnni();
}

}  // namespace mbk::gemm
