"""SCHEMAS.md is the one place the op schemas are written down: it must match what is registered."""

from pathlib import Path

import mbkernels
from mbkernels.ops import OPS

DOC = (Path(mbkernels.__file__).parent / "ops" / "SCHEMAS.md").read_text()


def test_every_registered_schema_is_documented_verbatim():
    assert set(OPS) == {"nonorm", "layernorm", "linear_norm", "bottleneck_attention", "attention", "ffn_stack",
                        "embedding", "encoder"}
    for name, d in OPS.items():
        schema = str(d.op._opoverload._schema)
        assert schema in DOC, f"SCHEMAS.md does not state {schema}"
        backward = str(d.backward_op._opoverload._schema)
        assert backward.startswith(f"mbkernels::{name}_backward(Tensor[] grads, bool[] needs_grad, ")
        assert backward.endswith(") -> Tensor[]")
        assert backward.split("needs_grad, ", 1)[1].split(") ->")[0] == schema.split("(", 1)[1].split(") ->")[0]
