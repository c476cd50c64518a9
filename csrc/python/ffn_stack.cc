// ffn_stack's forward (ops/ffn_stack.h): every FFN of the stack per row tile, the intermediate in
// cache; with the three `saved` buffers (ReLU, one intermediate width) it also writes what the
// backward needs. The backward is composed in mbkernels/ops/ffn_stack.py from _C.gemm,
// _C.norm_backward and _C.activation_backward (the gradient GEMMs are torch's).
#include <stdexcept>
#include <vector>

#include "binding.h"
#include "ops/ffn_stack.h"

namespace mbk::python {

void bind_ffn_stack(py::module_& m) {
  m.def(
      "ffn_stack_forward",
      [](Ptr x, int64_t ldx, int64_t rows, const std::vector<Packed>& intermediate,
         const std::vector<Packed>& output, const std::vector<Ptr>& norm_weights,
         const std::vector<Ptr>& norm_biases, const std::vector<float>& eps, const std::string& act,
         const std::string& norm, Ptr y, int64_t ldy, Ptr saved_x, Ptr saved_h, Ptr saved_t, int threads) {
        const size_t count = intermediate.size();
        if (output.size() != count || norm_weights.size() != count || norm_biases.size() != count ||
            eps.size() != count)
          throw std::invalid_argument("ffn_stack_forward: every list needs one entry per FFN");
        std::vector<ops::FfnWeights> ffns;
        for (size_t i = 0; i < count; ++i)
          ffns.push_back({intermediate[i].get(), output[i].get(), in(norm_weights[i]),
                          in(norm_biases[i]), eps[i]});
        const ops::FfnSaved saved{out(saved_x), out(saved_h), out(saved_t)};
        py::gil_scoped_release release;
        ops::ffn_stack_forward(in(x), ldx, rows, ffns.data(), static_cast<int>(count), parse_act(act),
                               parse_norm(norm), out(y), ldy, threads, saved_h != 0 ? &saved : nullptr);
      },
      py::arg("x"), py::arg("ldx"), py::arg("rows"), py::arg("intermediate"), py::arg("output"),
      py::arg("norm_weights"), py::arg("norm_biases"), py::arg("eps"), py::arg("act"), py::arg("norm"),
      py::arg("y"), py::arg("ldy"), py::arg("saved_x"), py::arg("saved_h"), py::arg("saved_t"),
      py::arg("threads"));
}

}  // namespace mbk::python
