// linear_norm's forward (ops/linear_norm.h): y = N(x Wᵀ + bias [+ residual]) on the packed GEMM with
// the norm at store. Its training forward and backward are composed in mbkernels/ops/linear_norm.py
// from _C.gemm, _C.norm_forward and _C.norm_backward (the gradient GEMMs are torch's).
#include "binding.h"
#include "ops/linear_norm.h"

namespace mbk::python {

void bind_linear_norm(py::module_& m) {
  m.def(
      "linear_norm_forward",
      [](Ptr x, int64_t ldx, int64_t rows, const Packed& w, Ptr residual, int64_t ld_residual,
         const std::string& norm, Ptr norm_weight, Ptr norm_bias, float eps, Ptr y, int64_t ldy,
         int threads) {
        ops::linear_norm_forward(in(x), ldx, rows, *w, in(residual), ld_residual, parse_norm(norm),
                                 in(norm_weight), in(norm_bias), eps, out(y), ldy, threads);
      },
      py::arg("x"), py::arg("ldx"), py::arg("rows"), py::arg("weight"), py::arg("residual"),
      py::arg("ld_residual"), py::arg("norm"), py::arg("norm_weight"), py::arg("norm_bias"),
      py::arg("eps"), py::arg("y"), py::arg("ldy"), py::arg("threads"), nogil());
}

}  // namespace mbk::python
