// Measured fp32 FMA throughput of this CPU: the "peak" that the benchmarks' percent-of-peak
// figures divide by (bench/, docs/design.md "Benchmark rules"). A measurement, not a datasheet number: it
// includes the clock the cores actually hold under an all-FMA load.
#pragma once

namespace mbk {

// Runs `threads` threads (OpenMP; one thread in a build without OpenMP), each issuing independent
// fp32 vector FMAs with the kernels of the best supported ISA (best_isa(), cpu.h), for `seconds`
// after a short warm-up, and returns the achieved GFLOP/s counting 2 flops per lane per FMA.
// Throws std::invalid_argument for threads < 1 or seconds not > 0.
double fma_peak_gflops(int threads, double seconds);

// The int8 counterpart, the peak the int8 GEMM's share divides by: the same threads and timing around
// the dot product of the int8 kernel the packer picks on the best ISA for weights of weight_bits bits
// (7 or 8; gemm.h Int8Variant best), on independent accumulators. Returns GOP/s counting 2 ops per
// multiply-accumulate (comparable with GFLOP/s). Throws std::invalid_argument for bad arguments or
// an ISA without an int8 kernel.
double int8_peak_gops(int threads, double seconds, int weight_bits);

}  // namespace mbk
