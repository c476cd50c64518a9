// nonorm and layernorm (ops/nonorm.h, ops/layernorm.h): contiguous [rows, cols] rows, residual
// optional; NoNorm in float32 or float64 (`float64`), LayerNorm in float32.
#include "binding.h"
#include "ops/layernorm.h"
#include "ops/nonorm.h"
#include "ops/norm.h"

namespace mbk::python {

void bind_norms(py::module_& m) {
  m.def(
      "nonorm_forward",
      [](Ptr x, Ptr res, Ptr w, Ptr b, Ptr y, int64_t rows, int64_t cols, bool float64, int threads) {
        if (float64)
          ops::nonorm_forward(in<double>(x), in<double>(res), in<double>(w), in<double>(b), out<double>(y),
                              rows, cols, threads);
        else
          ops::nonorm_forward(in(x), in(res), in(w), in(b), out(y), rows, cols, threads);
      },
      py::arg("x"), py::arg("res"), py::arg("w"), py::arg("b"), py::arg("y"), py::arg("rows"),
      py::arg("cols"), py::arg("float64"), py::arg("threads"), nogil());
  // gx is also the residual's gradient.
  m.def(
      "nonorm_backward",
      [](Ptr g, Ptr x, Ptr res, Ptr w, Ptr gx, Ptr gw, Ptr gb, int64_t rows, int64_t cols, bool float64,
         int threads) {
        if (float64)
          ops::nonorm_backward(in<double>(g), in<double>(x), in<double>(res), in<double>(w), out<double>(gx),
                               out<double>(gw), out<double>(gb), rows, cols, threads);
        else
          ops::nonorm_backward(in(g), in(x), in(res), in(w), out(gx), out(gw), out(gb), rows, cols, threads);
      },
      py::arg("g"), py::arg("x"), py::arg("res"), py::arg("w"), py::arg("gx"), py::arg("gw"),
      py::arg("gb"), py::arg("rows"), py::arg("cols"), py::arg("float64"), py::arg("threads"), nogil());
  m.def(
      "layernorm_forward",
      [](Ptr x, Ptr res, Ptr w, Ptr b, float eps, Ptr y, int64_t rows, int64_t cols, int threads) {
        ops::layernorm_forward(in(x), in(res), in(w), in(b), eps, out(y), rows, cols, threads);
      },
      py::arg("x"), py::arg("res"), py::arg("w"), py::arg("b"), py::arg("eps"), py::arg("y"),
      py::arg("rows"), py::arg("cols"), py::arg("threads"), nogil());
  // gx is also the residual's gradient.
  m.def(
      "layernorm_backward",
      [](Ptr g, Ptr x, Ptr res, Ptr w, float eps, Ptr gx, Ptr gw, Ptr gb, int64_t rows, int64_t cols,
         int threads) {
        // t = x + res is formed in gx: the LayerNorm backward may write gt over t.
        const float* t = in(x);
        if (res != 0) {
          float* sum = out(gx);
          for (int64_t i = 0; i < rows * cols; ++i) sum[i] = in(x)[i] + in(res)[i];
          t = sum;
        }
        ops::norm_backward(gemm::Norm::layernorm, in(g), t, in(w), eps, out(gx), out(gw), out(gb),
                           nullptr, rows, cols, threads);
      },
      py::arg("g"), py::arg("x"), py::arg("res"), py::arg("w"), py::arg("eps"), py::arg("gx"),
      py::arg("gw"), py::arg("gb"), py::arg("rows"), py::arg("cols"), py::arg("threads"), nogil());
}

}  // namespace mbk::python
