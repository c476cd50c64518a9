// gemm_avx512.cc once more as the avx512_simde ISA: compiled with the avx512_simde flags
// (mbk_isa_sources: baseline x86-64, MBK_AVX512_SIMDE), so simd/avx512.h takes the AVX-512
// intrinsics from SIMDe and the kernels land in namespace avx512_simde. A file of its own because
// CMake gives one source file one set of flags.
#include "gemm/gemm_avx512.cc"
