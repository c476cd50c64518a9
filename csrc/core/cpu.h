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

enum class Isa { scalar, avx2, avx512, neon };

const char* isa_name(Isa isa);
// Throws std::invalid_argument for a name that is none of scalar/avx2/avx512/neon.
Isa parse_isa(const std::string& name);

// Built into this library, in the order scalar, avx2, avx512, neon.
std::vector<Isa> compiled_isas();
// Compiled and runnable on this CPU. NEON built through SIMDe on x86 runs anywhere.
std::vector<Isa> supported_isas();
bool isa_supported(Isa isa);
// The fastest supported ISA (SIMDe's emulated NEON is never chosen on x86).
Isa best_isa();

Isa active_isa();
// Throws std::invalid_argument naming the reason when the ISA is not compiled or not supported.
void set_isa(Isa isa);
void set_isa(const std::string& name);

}  // namespace mbk
