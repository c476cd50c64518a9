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


def test_training_forwards_are_documented():
    """The saving training forwards (`<name>_train`): their schemas, and arguments identical to the op's."""
    saving = {name: d for name, d in OPS.items() if d.train_op is not None}
    assert {"linear_norm", "ffn_stack"} <= set(saving)
    for name, d in saving.items():
        schema = str(d.train_op._opoverload._schema)
        assert schema in DOC, f"SCHEMAS.md does not state {schema}"
        args = str(d.op._opoverload._schema).split("(", 1)[1].split(") ->")[0]
        assert schema == f"mbkernels::{name}_train({args}) -> " + schema.split(") -> ", 1)[1]
        assert schema.endswith(", Tensor[])")
        backward = str(d.train_backward_op._opoverload._schema)
        assert backward == f"mbkernels::{name}_train_backward(Tensor[] grads, bool[] needs_grad, Tensor[] saved, {args}) -> Tensor[]"
