// fma_peak_gflops and int8_peak_gops: warm-up, then every thread runs blocks of the best ISA's FMA (or
// int8 dot-product) loop until the deadline; rate = all threads' operations / (last thread's finish -
// common start).
#include "peak.h"

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "cpu.h"
#include "gemm/gemm_kernels.h"
#include "peak_kernels.h"

namespace mbk {
namespace {

using Block = int64_t (*)(int64_t, float*);

Block block_for(Isa isa) {
  switch (isa) {
#ifdef MBK_HAVE_AVX2
    case Isa::avx2: return peak::avx2::fma_block_f32;
#endif
#ifdef MBK_HAVE_AVX512
    case Isa::avx512: return peak::avx512::fma_block_f32;
#endif
#ifdef MBK_HAVE_NEON
    case Isa::neon: return peak::neon::fma_block_f32;
#endif
#ifdef MBK_HAVE_AVX512_SIMDE
    case Isa::avx512_simde: return peak::avx512_simde::fma_block_f32;
#endif
    default: return peak::scalar::fma_block_f32;
  }
}

// Rounds per block: ~10-50 us of work, so reading the clock between blocks costs nothing and a
// thread overshoots the deadline by at most one block.
constexpr int64_t kBlockIters = 8192;
// Warm-up before the clock starts: long enough for idle cores to reach their loaded frequency.
constexpr double kWarmupMaxSeconds = 0.1;

// Operations per second (1e9) of `block` (returning the operations of kBlockIters rounds) on
// `threads` threads for `seconds`.
double measure(const char* name, Block block, int threads, double seconds) {
  if (threads < 1)
    throw std::invalid_argument(std::string(name) + ": threads must be >= 1, got " + std::to_string(threads));
  if (!(seconds > 0.0))
    throw std::invalid_argument(std::string(name) + ": seconds must be > 0, got " + std::to_string(seconds));
  using clock = std::chrono::steady_clock;
  const double warmup_s = seconds < 4 * kWarmupMaxSeconds ? seconds / 4 : kWarmupMaxSeconds;
  const auto warmup =
      std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(warmup_s));
  const auto span = std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(seconds));
  int64_t ops = 0;
  clock::time_point start, stop;
#pragma omp parallel num_threads(threads) reduction(+ : ops)
  {
    float sink = 0.0f;
    const auto warm_end = clock::now() + warmup;
    while (clock::now() < warm_end) block(kBlockIters, &sink);
#pragma omp barrier
#pragma omp single
    start = clock::now();  // the implicit barrier after `single` releases every thread together
    const auto deadline = start + span;
    do {
      ops += block(kBlockIters, &sink);
    } while (clock::now() < deadline);
    const auto done = clock::now();
#pragma omp critical
    if (done > stop) stop = done;
    volatile float keep = sink;  // the accumulators' result is observed: the loop must run
    (void)keep;
  }
  return static_cast<double>(ops) / std::chrono::duration<double>(stop - start).count() * 1e-9;
}

}  // namespace

double fma_peak_gflops(int threads, double seconds) {
  return measure("fma_peak_gflops", block_for(best_isa()), threads, seconds);
}

double int8_peak_gops(int threads, double seconds, int weight_bits) {
  if (weight_bits != 7 && weight_bits != 8)
    throw std::invalid_argument("int8_peak_gops: weight_bits must be 7 or 8, got " + std::to_string(weight_bits));
  const gemm::Int8Gemm& kern = gemm::int8_gemm(best_isa(), gemm::Int8Variant::best, gemm::int8_weight_max(weight_bits));
  return 2.0 * measure("int8_peak_gops", kern.dot_block, threads, seconds);
}

}  // namespace mbk
