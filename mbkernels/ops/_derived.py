"""Values built from tensors, found again by the tensors' identity while they are unchanged: a
Linear's packed weights, an op's prepared weight arguments (packings and norm-parameter pointers),
the validation of the encoder's weight list. A model's inference calls pass the same parameter
objects every time; finding what was built from them costs one lookup instead of one per weight.

A value is reused while the same tensor objects (weak references; None for an absent one) come back
with the same data pointers, versions, shapes and strides. The version counter is bumped by every
in-place write through torch (optimizer steps, `copy_`, `load_state_dict`), except by torch's fused
optimizers (`fused=True`), whose steps `_bump_after_fused_step` bumps. Shape and strides are stamped
too because `.data = t.data.t()` re-views a tensor without a bump. Inference tensors have no
version counter: their stamp is `_C.fingerprint` of 32 elements spread over the tensor (see
`_packed.py`). Writes that bypass torch (numpy, raw pointers, `.data` in place) are invisible, as
they are to autograd: `clear()` after one.

A value must not hold its tensors (an entry goes when one of them dies, and would never die);
it may hold their data pointers, valid while the stamps match and the caller holds the tensors.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from operator import attrgetter, is_
from typing import TypeVar

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

T = TypeVar("T")

_values: dict[tuple, tuple[list, tuple, object]] = {}  # (key, tensor ids) -> (weak refs, stamps, value)
hits = 0  # lookups answered here (`_packed.stats()`)

_version, _shape = attrgetter("_version"), attrgetter("shape")
_dereference = weakref.ref.__call__


def _stamps(live: list[torch.Tensor]) -> tuple:
    """Data pointers, versions, shapes and strides of `live`: one pass per attribute (map over C
    getters: a 24-layer encoder has 1104 weights)."""
    try:
        versions = tuple(map(_version, live))
    except RuntimeError:  # an inference tensor: no version counter
        from mbkernels.ops._packed import stamp
        versions = tuple(map(stamp, live))
    return (tuple(map(torch.Tensor.data_ptr, live)), versions, tuple(map(_shape, live)),
            tuple(map(torch.Tensor.stride, live)))


def derived(key: tuple, tensors: Sequence[torch.Tensor | None], build: Callable[[], T]) -> T:
    """`build()` for these tensors, built once and reused while they are the same and unchanged."""
    global hits
    fast_key = (key, *map(id, tensors))  # where the Nones are is part of the key (id(None))
    live = [t for t in tensors if t is not None]
    stamps = _stamps(live)
    hit = _values.get(fast_key)
    if hit is not None and hit[1] == stamps and all(map(is_, map(_dereference, hit[0]), live)):
        hits += 1
        return hit[2]
    value = build()

    def forget(_, fast_key=fast_key):  # a tensor died: its id may be reused by a new tensor
        _values.pop(fast_key, None)
    _values[fast_key] = ([weakref.ref(t, forget) for t in live], stamps, value)
    return value


def clear() -> None:
    _values.clear()


def _bump_after_fused_step(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    """torch's fused optimizer kernels (`AdamW(fused=True)`, ...) update the parameters in place
    without bumping their version counters, and the stamps above would keep serving packings of the
    weights before the step. Bump them after every fused step, as any other in-place write does."""
    for group in optimizer.param_groups:
        if group.get("fused"):
            for p in group["params"]:
                torch.autograd.graph.increment_version(p)


# Every optimizer's step, once per process (a global hook: it sees optimizers made before and after).
register_optimizer_step_post_hook(_bump_after_fused_step)
