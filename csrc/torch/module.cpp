// The pybind11 module mbkernels._C: ISA information and selection. Loading it also registers the
// mbkernels_cpu ops (ops.cpp is linked into the same library), so torch.ops.mbkernels_cpu.* exist
// after `import mbkernels._C`. Tensors never cross this module: it needs no torch headers.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "cpu.h"

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
}
