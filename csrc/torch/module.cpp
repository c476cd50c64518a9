// The pybind11 module mbkernels._C: ISA information and selection. Loading it also registers the
// mbkernels_cpu ops (ops.cpp is linked into the same library), so torch.ops.mbkernels_cpu.* exist
// after `import mbkernels._C`. Tensors never cross this module: it needs no torch headers.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "cpu.h"
#include "peak.h"
#include "gemm/gemm.h"
#include "weight_cache.h"

namespace {

std::vector<std::string> names(const std::vector<mbk::Isa>& isas) {
  std::vector<std::string> out;
  for (mbk::Isa isa : isas) out.emplace_back(mbk::isa_name(isa));
  return out;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "mbkernels C++ CPU kernels: ISA selection (the ops are torch.ops.mbkernels_cpu.*)";
  m.def("compiled_isas", [] { return names(mbk::compiled_isas()); },
        "ISAs built into this extension, e.g. ['scalar', 'avx2', 'avx512', 'neon'].");
  m.def("supported_isas", [] { return names(mbk::supported_isas()); },
        "Compiled ISAs this CPU can run.");
  m.def("best_isa", [] { return std::string(mbk::isa_name(mbk::best_isa())); },
        "The fastest supported ISA.");
  m.def("get_isa", [] { return std::string(mbk::isa_name(mbk::active_isa())); },
        "The ISA the kernels use now (process-wide; initially $MBK_ISA if usable, else best).");
  // std::invalid_argument becomes ValueError.
  m.def("set_isa", [](const std::string& isa) { mbk::set_isa(isa); }, pybind11::arg("isa"),
        "Make the kernels use isa; ValueError if it is unknown, not compiled or not supported.");
  m.def("gemm_kernel", [] { return std::string(mbk::gemm::tile(mbk::active_isa()).name); },
        "The GEMM microkernel the active ISA runs, e.g. 'f32_gemm_6x16__avx2'.");
  m.def(
      "packed_weight_stats",
      [] {
        const mbk::torch_cpu::PackedWeightStats s = mbk::torch_cpu::packed_weight_stats();
        pybind11::dict d;
        d["packs"] = s.packs;
        d["hits"] = s.hits;
        d["misses"] = s.misses;
        d["entries"] = s.entries;
        d["bytes"] = s.bytes;
        return d;
      },
      "The packed-weight cache: packs (weights packed in this process), hits, misses, entries "
      "and bytes held now.");
  m.def("clear_packed_weights", [] { mbk::torch_cpu::clear_packed_weights(); },
        "Drop every cached weight packing (after writes the cache cannot see, e.g. through .data "
        "on an inference tensor).");
  // The GIL is released while the threads run; std::invalid_argument becomes ValueError.
  m.def(
      "fma_peak_gflops",
      [](int threads, double seconds) {
        pybind11::gil_scoped_release release;
        return mbk::fma_peak_gflops(threads, seconds);
      },
      pybind11::arg("threads"), pybind11::arg("seconds"),
      "Measured fp32 FMA throughput in GFLOP/s: `threads` threads of independent vector FMAs on "
      "the best ISA for `seconds` (the benchmarks' CPU fp32 peak).");
}
