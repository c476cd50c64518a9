// gemm_avx512_vnni.cc once more for the avx512_simde ISA (q8_gemm_6x64__avx512vnni_simde): compiled
// with the avx512_simde flags like gemm_avx512_simde.cc, SIMDe emulating vpdpbusd.
#include "gemm/gemm_avx512_vnni.cc"
