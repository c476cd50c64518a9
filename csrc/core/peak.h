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

}  // namespace mbk
