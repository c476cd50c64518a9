"""The C++ embedding forward (mbkernels_cpu::embedding_forward) on every ISA this machine runs,
against the float64 reference: trigram or not, both norms, odd sequence lengths; what it leaves to
the reference (inputs_embeds, dropout); an id out of range is an IndexError naming it."""

import pytest
import torch

import mbkernels
from mbkernels import backend, ops
from mbkernels.testing import rel_err

from op_cases import embedding_case

_C = pytest.importorskip("mbkernels._C", reason="mbkernels._C is not built")


@pytest.mark.parametrize("trigram,norm", [(True, "nonorm"), (False, "layernorm"), (True, "layernorm")])
@pytest.mark.parametrize("s", [1, 7, 129])
def test_embedding_forward(isa, s, trigram, norm):
    fn, args, kwargs = embedding_case(s=s, trigram=trigram, norm=norm)
    args = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    out = fn(*args, **kwargs)
    assert backend.last_ran["embedding"] == f"cpu:{isa}"
    with mbkernels.use_backend("reference"):
        ref = fn(*[a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args],
                 **kwargs)
    assert rel_err(out, ref) <= 1e-5


def test_inputs_embeds_and_dropout_run_the_reference():
    fn, args, kwargs = embedding_case(s=5)
    ids, _, *rest = args
    embeds = rest[2][ids].detach()
    fn(None, embeds, *rest, **kwargs)
    assert backend.last_ran["embedding"] == "reference"
    fn(*args, **kwargs, dropout_p=0.1)
    assert backend.last_ran["embedding"] == "reference"


def test_id_out_of_range_is_an_index_error():
    """mbkernels.ops.embedding checks ids in Python first; the C++ op checks them too."""
    fn, args, kwargs = embedding_case(s=5, vocab=50)
    ids, _, types, pos, table, wt, bt, pe, te, nw, nb = [a.detach() if isinstance(a, torch.Tensor) else a
                                                         for a in args]
    ids = ids.clone()
    ids[1, 3] = 50
    with pytest.raises(IndexError, match="input_ids must be in"):
        torch.ops.mbkernels_cpu.embedding_forward(ids, types, pos, table, wt, bt, pe, te, nw, nb, True, "nonorm",
                                                  1e-5)
