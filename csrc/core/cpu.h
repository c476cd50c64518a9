// Runtime ISA selection for the torch-free core.
//
// Every ISA's kernels are compiled once, each translation unit with that ISA's flags (see
// mbk_isa_sources in CMakeLists.txt); this file decides at run time which of them may run and
// which one the dispatchers in ops/ call. The active ISA is process-wide: initially $MBK_ISA when
// it names a usable ISA, otherwise the best one.
#pragma once

#include <string>
#include <vector>

namespace mbk {

// avx512_simde ("avx512-simde"): the avx512 kernels built a second time through SIMDe's AVX-512
// emulation for baseline x86-64, so they run in the tests on any x86 CPU (simd/avx512.h).
enum class Isa { scalar, avx2, avx512, neon, avx512_simde };

const char* isa_name(Isa isa);
// Throws std::invalid_argument for a name that is none of scalar/avx2/avx512/neon/avx512-simde.
Isa parse_isa(const std::string& name);

// Built into this library, in the order scalar, avx2, avx512, neon, avx512-simde.
std::vector<Isa> compiled_isas();
// Compiled and runnable on this CPU. NEON and AVX-512 built through SIMDe on x86 run anywhere.
std::vector<Isa> supported_isas();
bool isa_supported(Isa isa);
// The fastest supported ISA (SIMDe's emulated NEON and AVX-512 are never chosen).
Isa best_isa();
// Whether this CPU runs the int8 dot-product extension of isa, which its faster int8 GEMM kernel
// needs (gemm.h, Int8Variant): NEON's FEAT_DotProd (sdot; Linux AArch64: HWCAP_ASIMDDP), AVX-512
// VNNI (vpdpbusd). True for the SIMDe builds on x86 (emulated), false for an ISA without one or
// one this CPU cannot run.
bool int8_dot_supported(Isa isa);

Isa active_isa();
// Throws std::invalid_argument naming the reason when the ISA is not compiled or not supported.
void set_isa(Isa isa);
void set_isa(const std::string& name);

}  // namespace mbk
