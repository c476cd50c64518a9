"""SCHEMAS.md is the one place the op schemas are written down: it must match what is registered."""

from pathlib import Path

import mbkernels
from mbkernels.ops import OPS

DOC = (Path(mbkernels.__file__).parent / "ops" / "SCHEMAS.md").read_text()


def test_every_registered_schema_is_documented_verbatim():
    assert set(OPS) == {"nonorm", "layernorm", "linear_norm", "bottleneck_attention", "attention", "ffn_stack",
                        "embedding", "encoder"}
    for name, d in OPS.items():
        schema = str(d.op._schema)
        assert schema in DOC, f"SCHEMAS.md does not state {schema}"
        args = schema.split("(", 1)[1].split(") ->")[0]
        assert args.endswith(", bool save"), schema
        assert schema.endswith(", Tensor[])"), schema  # the outputs, then the saved list
        backward = str(d.backward_op._schema)
        assert backward == (f"mbkernels::{name}_backward(Tensor[] grads, bool[] needs_grad, Tensor[] saved, "
                            f"{args.removesuffix(', bool save')}) -> Tensor[]")


def test_each_public_op_is_exactly_two_registered_ops():
    """8 public ops, 16 registered torch ops: no private namespace, no training twins."""
    import torch
    registered = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("mbkernels"))
    assert registered == sorted([*(f"mbkernels::{n}" for n in OPS), *(f"mbkernels::{n}_backward" for n in OPS)])
    assert len(registered) == 16
