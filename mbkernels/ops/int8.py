"""int8 weights as the ops take them: a Linear's weight as int8 [N, K] in [-127, 127], with its
per-output-channel `scale` [N] (W ≈ weight * scale[:, None]) and optional per-input-channel
`smooth` [K] (the activation's column k is multiplied by smooth[k] before it is quantized; the
weight's columns carry 1 / smooth: SmoothQuant). Inference only.

Every op takes an int8 weight wherever it takes a float one, once the weight is registered here
(`mbkernels.quantize` registers the weights of the `Int8Linear` modules it makes): the CPU kernels
pack it for the int8 GEMM (`_packed.py`), the reference computes `reference.int8_linear` (the
definition: activations quantized per row, exact integer sums), and a call that wants a gradient
through it is an error. The registry holds the owning module weakly and reads its scale and smooth
on each lookup, so `module.to(...)` and `load_state_dict` are seen.
"""

from __future__ import annotations

import weakref
from typing import NamedTuple

import torch
from torch.utils.weak import WeakTensorKeyDictionary


class Int8Form(NamedTuple):
    scale: torch.Tensor
    smooth: torch.Tensor | None


_owners = WeakTensorKeyDictionary()  # int8 weight -> weakref to the module holding its scale and smooth
# Whether any weight was ever registered: a plain global that torch.compile reads as a constant (the
# dictionary's len() is a function dynamo will not trace), so float-only programs pay nothing.
_any = False


def register(weight: torch.Tensor, owner) -> None:
    """Make `weight` (int8 [N, K]) an int8 weight whose scale and smooth are `owner.weight_scale`
    and `owner.input_smooth` (None: no smoothing)."""
    global _any
    _owners[weight] = weakref.ref(owner)
    _any = True


def form(t: torch.Tensor | None) -> Int8Form | None:
    """The scales of `t` when it is a registered int8 weight, else None."""
    if not _any or t is None or t.dtype != torch.int8:
        return None
    ref = _owners.get(t)
    owner = ref() if ref is not None else None
    return None if owner is None else Int8Form(owner.weight_scale, owner.input_smooth)


def exists() -> bool:
    """Whether any int8 weight was ever registered: callers on hot paths ask this before gathering
    the tensors for `any_int8`."""
    return _any


def any_int8(tensors) -> bool:
    """Whether any of `tensors` (None allowed) is a registered int8 weight."""
    return _any and any(form(t) is not None for t in tensors)


def no_gradient_error(op: str) -> RuntimeError:
    return RuntimeError(f"mbkernels.ops.{op}: a gradient was asked for through int8 weights (a quantized model "
                        "runs inference only: call it under torch.no_grad() or torch.inference_mode(), or train "
                        "the float32 model and quantize it again)")
