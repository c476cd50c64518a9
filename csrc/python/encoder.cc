#include "binding.h"

namespace mbk::python {

void bind_encoder(py::module_& m) { (void)m; }

}  // namespace mbk::python
