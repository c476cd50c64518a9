// What every binding file of mbkernels._C shares. The module is torch-free: a tensor crosses as its
// data pointer (a Python int, 0 for None), with the sizes and strides the Python op read from it;
// outputs and workspaces are allocated by the Python op (torch.empty) and passed in the same way.
// Arguments were validated once, in mbkernels/ops/_arguments.py; the core keeps its own guards
// (std::invalid_argument, which pybind11 turns into ValueError) for what only it can see.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <string>

#include "gemm/gemm.h"

namespace mbk::python {

namespace py = pybind11;

using Ptr = std::uintptr_t;  // a tensor's data_ptr(); 0 stands for None
using Packed = std::shared_ptr<gemm::PackedWeights>;

template <class T = float>
const T* in(Ptr p) {
  return reinterpret_cast<const T*>(p);
}
template <class T = float>
T* out(Ptr p) {
  return reinterpret_cast<T*>(p);
}

// The kernels run without the GIL: other Python threads (a data loader, another model) go on.
using nogil = py::call_guard<py::gil_scoped_release>;

gemm::Norm parse_norm(const std::string& norm);  // "nonorm" | "layernorm" | "none"
gemm::Act parse_act(const std::string& act);     // "relu" | "gelu" | "none"

// One binding function per op file: module.cc calls each.
void bind_norms(py::module_& m);
void bind_linear_norm(py::module_& m);
void bind_ffn_stack(py::module_& m);
void bind_attention(py::module_& m);
void bind_bottleneck_attention(py::module_& m);
void bind_embedding(py::module_& m);
void bind_encoder(py::module_& m);

}  // namespace mbk::python
