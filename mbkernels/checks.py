"""Finite checks: the float16 overflow flag of every model forward, and the check mode.

MobileBERT's activations reach ~1e7 with real weights (REFERENCE), far past float16's 65504, so a
float16 forward can overflow where float32 does not. In float16 every model forward therefore
collects, for each op, a device-side value (the output's max |x|: NaN if it holds a NaN, inf if it
overflowed) without synchronizing, and looks at them once at its end: one sync per forward, and a
`NonFiniteError` naming the first op and layer that produced a non-finite value.

The check mode — `with mbkernels.check_finite():`, or `MBK_CHECK_FINITE=1` in the environment — does
the same for every dtype after every op (forward and backward), synchronizing each time, and raises
at the first non-finite output. It is off by default; off, an op pays one context-variable read.

Who reports: the public op function reports its outputs, whichever path ran (`ops/_registry.py`,
`OpDef.__call__`: the reference bypass included), and the backward op its gradients. Modules name the site (`"layer 3
(encoder.layer.3)"`, `"embeddings"`) in a context variable, so the state is per thread: a
`check_finite()` block covers the thread that entered it (the environment variable covers all).
Under `torch.compile` the per-forward float16 check is skipped (it would break the graph).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch


ENV = "MBK_CHECK_FINITE"


class NonFiniteError(FloatingPointError):
    """An op produced NaN or inf: `op`, `site` (layer or module, or None), `kind` ("nan"/"inf"), `dtype`."""

    def __init__(self, op: str, site: str | None, kind: str, dtype: torch.dtype):
        self.op, self.site, self.kind, self.dtype = op, site, kind, dtype
        where = f"{site} " if site else ""
        hint = ""
        if dtype == torch.float16 and kind == "inf":
            hint = (" (float16 overflows past 65504; MobileBERT's activations reach ~1e7: use bfloat16 or "
                    "float32)")
        super().__init__(f"{where}{op} produced {kind} in {str(dtype).removeprefix('torch.')}{hint}")


@dataclass
class _Scope:
    """What is being checked in this context: every op now (`immediate`), and/or the float16 forward
    being collected (`pending`: (site, op, dtype, max |x| as a device tensor) per op output)."""
    immediate: bool
    pending: list | None = field(default=None)


_scope: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar(
    "mbkernels_checks", default=_Scope(immediate=True) if os.environ.get(ENV) == "1" else None)
_site: contextvars.ContextVar[str | None] = contextvars.ContextVar("mbkernels_check_site", default=None)
_NOTHING = contextlib.nullcontext()


def active() -> bool:
    """Whether anything is checked here (check mode, or a float16 forward in progress)."""
    return not torch.compiler.is_compiling() and _scope.get() is not None


@contextlib.contextmanager
def check_finite(enabled: bool = True) -> Iterator[None]:
    """Raise `NonFiniteError` at the first op whose output is not finite (every dtype, every op)."""
    outer = _scope.get()
    inner = _Scope(immediate=enabled, pending=outer.pending if outer is not None else None)
    token = _scope.set(inner if enabled or inner.pending is not None else None)
    try:
        yield
    finally:
        _scope.reset(token)


def current_site() -> str | None:
    return None if torch.compiler.is_compiling() else _site.get()


def site(name: str | None):
    """Name the layer or module whose ops run inside the block (a no-op when nothing is checked)."""
    if name is None or not active():
        return _NOTHING
    return _at_site(name)


@contextlib.contextmanager
def _at_site(name: str) -> Iterator[None]:
    token = _site.set(name)
    try:
        yield
    finally:
        _site.reset(token)


def _float16_forward(reference: torch.Tensor) -> bool:
    if reference.dtype == torch.float16:
        return True
    device = reference.device.type
    return torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.float16


@contextlib.contextmanager
def model_forward(reference: torch.Tensor) -> Iterator[None]:
    """A model forward: in float16 (`reference` — a parameter — is float16, or float16 autocast is on)
    its ops' flags are collected and checked once when the block ends. Nested forwards share the
    outermost one's check."""
    # Dynamo cannot trace ContextVar.get: while compiling, test that first and touch nothing.
    if torch.compiler.is_compiling():
        yield
        return
    outer = _scope.get()
    if (outer is not None and outer.pending is not None) or not _float16_forward(reference):
        yield
        return
    scope = _Scope(immediate=outer is not None and outer.immediate, pending=[])
    token = _scope.set(scope)
    try:
        yield
    finally:
        _scope.reset(token)
    _raise_first(scope.pending)


def _max_abs(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(t.detach(), float("inf"))  # NaN if any NaN, inf if any inf


def observe(op: str, out) -> None:
    """Report an op's output(s) (a tensor, or a tuple/list of them)."""
    scope = _scope.get()
    if scope is None:
        return
    outs = out if isinstance(out, (tuple, list)) else (out,)
    where = _site.get()
    for t in outs:
        if not isinstance(t, torch.Tensor) or t.numel() == 0 or not t.is_floating_point():
            continue
        if scope.immediate:
            value = float(_max_abs(t))
            if value != value or value == float("inf"):
                raise NonFiniteError(op, where, "nan" if value != value else "inf", t.dtype)
        elif scope.pending is not None:
            scope.pending.append((where, op, t.dtype, _max_abs(t)))


def _raise_first(pending: list) -> None:
    if not pending:
        return
    device = pending[0][3].device
    values = torch.stack([v.to(device, torch.float32) for *_, v in pending]).cpu()  # the one sync
    finite = torch.isfinite(values)
    if bool(finite.all()):
        return
    i = int((~finite).nonzero()[0])
    where, op, dtype, _ = pending[i]
    raise NonFiniteError(op, where, "nan" if bool(values[i].isnan()) else "inf", dtype)
