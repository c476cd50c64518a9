#include "cpu.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace mbk {
namespace {

constexpr Isa kAllIsas[] = {Isa::scalar, Isa::avx2, Isa::avx512, Isa::neon, Isa::avx512_simde};

bool compiled(Isa isa) {
  switch (isa) {
    case Isa::scalar: return true;
#ifdef MBK_HAVE_AVX2
    case Isa::avx2: return true;
#endif
#ifdef MBK_HAVE_AVX512
    case Isa::avx512: return true;
#endif
#ifdef MBK_HAVE_NEON
    case Isa::neon: return true;
#endif
#ifdef MBK_HAVE_AVX512_SIMDE
    case Isa::avx512_simde: return true;
#endif
    default: return false;
  }
}

bool cpu_runs(Isa isa) {
  switch (isa) {
    case Isa::scalar: return true;
#if defined(__x86_64__) || defined(__i386__)
    // libgcc's checks include the OS (XCR0) enabling the AVX / AVX-512 register state.
    case Isa::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    case Isa::neon: return true;  // SIMDe build: baseline x86-64 code.
    case Isa::avx512_simde: return true;  // likewise
#elif defined(__aarch64__)
    case Isa::neon: return true;  // Advanced SIMD is mandatory on AArch64.
#endif
    default: return false;
  }
}

std::string join_names(const std::vector<Isa>& isas) {
  std::string out;
  for (Isa isa : isas) {
    if (!out.empty()) out += ", ";
    out += isa_name(isa);
  }
  return out;
}

void check_usable(Isa isa) {
  if (!compiled(isa))
    throw std::invalid_argument(std::string("ISA '") + isa_name(isa) +
                                "' is not compiled into this build (compiled: " +
                                join_names(compiled_isas()) + ")");
  if (!cpu_runs(isa))
    throw std::invalid_argument(std::string("ISA '") + isa_name(isa) +
                                "' is compiled but this CPU cannot run it (supported: " +
                                join_names(supported_isas()) + ")");
}

Isa initial_isa() {
  const char* env = std::getenv("MBK_ISA");
  if (env != nullptr && *env != '\0') {
    try {
      Isa isa = parse_isa(env);
      check_usable(isa);
      return isa;
    } catch (const std::invalid_argument& e) {
      std::fprintf(stderr, "mbkernels: ignoring MBK_ISA: %s\n", e.what());
    }
  }
  return best_isa();
}

std::atomic<int>& active_slot() {
  static std::atomic<int> slot{-1};
  return slot;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    case Isa::neon: return "neon";
    case Isa::avx512_simde: return "avx512-simde";
  }
  return "unknown";
}

Isa parse_isa(const std::string& name) {
  for (Isa isa : kAllIsas)
    if (name == isa_name(isa)) return isa;
  throw std::invalid_argument("unknown ISA '" + name +
                              "' (expected one of: scalar, avx2, avx512, neon, avx512-simde)");
}

std::vector<Isa> compiled_isas() {
  std::vector<Isa> out;
  for (Isa isa : kAllIsas)
    if (compiled(isa)) out.push_back(isa);
  return out;
}

bool isa_supported(Isa isa) { return compiled(isa) && cpu_runs(isa); }

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : kAllIsas)
    if (isa_supported(isa)) out.push_back(isa);
  return out;
}

Isa best_isa() {
#if defined(__aarch64__)
  constexpr Isa kPreference[] = {Isa::neon, Isa::scalar};
#else
  constexpr Isa kPreference[] = {Isa::avx512, Isa::avx2, Isa::scalar};
#endif
  for (Isa isa : kPreference)
    if (isa_supported(isa)) return isa;
  return Isa::scalar;
}

bool int8_dot_supported(Isa isa) {
  if (!isa_supported(isa)) return false;
  switch (isa) {
#if defined(__x86_64__) || defined(__i386__)
    case Isa::avx512: return __builtin_cpu_supports("avx512vnni");
    case Isa::neon: return true;  // SIMDe build: emulated
    case Isa::avx512_simde: return true;
#elif defined(__aarch64__) && defined(__linux__)
    case Isa::neon: return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#endif
    default: return false;
  }
}

Isa active_isa() {
  std::atomic<int>& slot = active_slot();
  int v = slot.load(std::memory_order_relaxed);
  if (v < 0) {
    int init = static_cast<int>(initial_isa());
    // A concurrent first call computes the same value; whichever store lands is correct.
    if (slot.compare_exchange_strong(v, init)) v = init;
  }
  return static_cast<Isa>(v);
}

void set_isa(Isa isa) {
  check_usable(isa);
  active_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
}

void set_isa(const std::string& name) { set_isa(parse_isa(name)); }

}  // namespace mbk
