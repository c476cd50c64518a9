#include "binding.h"

namespace mbk::python {

void bind_bottleneck_attention(py::module_& m) { (void)m; }

}  // namespace mbk::python
