#include "binding.h"

namespace mbk::python {

void bind_embedding(py::module_& m) { (void)m; }

}  // namespace mbk::python
