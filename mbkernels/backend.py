"""Which backend runs the ops: `use_backend`, the MBK_BACKEND / MBK_ISA defaults, and `_C`.

`fused` (default): each op runs its compiled kernel for the tensor's device (C++ `_C` on CPU,
Triton on CUDA) and the reference inside the custom op where no kernel exists yet.
`reference`: the modules call `ops/reference.py` directly with plain autograd, bypassing the custom
ops (the independent oracle). `triton`: Triton kernels even for CPU tensors, which needs the Triton
interpreter (`TRITON_INTERPRET=1` before `mbkernels` is imported).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

BACKENDS = ("fused", "reference", "triton")

try:  # the package imports and runs its reference and Triton paths without a build
    from mbkernels import _C
except ImportError as _e:  # pragma: no cover - exercised on source checkouts without a build
    _C = None
    C_IMPORT_ERROR: str | None = str(_e)
else:
    C_IMPORT_ERROR = None

# Read once: Triton reads it when it is imported, so setting it later has no effect.
TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    return backend


class _State(threading.local):
    def __init__(self) -> None:
        self.backend = _check_backend(os.environ.get("MBK_BACKEND", "fused"))


_state = _State()

# What actually ran each op last ("cpu:avx2", "reference", "triton", ...): tests assert on it.
last_ran: dict[str, str] = {}


def current_backend() -> str:
    return _state.backend


def compiled_isas() -> list[str]:
    return list(_C.compiled_isas()) if _C is not None else []


def supported_isas() -> list[str]:
    return list(_C.supported_isas()) if _C is not None else []


def active_isa() -> str | None:
    return _C.get_isa() if _C is not None else None


@contextlib.contextmanager
def use_backend(backend: str = "fused", isa: str | None = None) -> Iterator[None]:
    """Run the ops inside the block on `backend` (and, on CPU, with the SIMD `isa`)."""
    _check_backend(backend)
    if backend == "triton" and not TRITON_INTERPRET:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(
                "use_backend('triton'): CPU tensors need the Triton interpreter; set "
                "TRITON_INTERPRET=1 in the environment before importing mbkernels (got it unset)")
    if isa is not None and _C is None:
        raise RuntimeError(f"use_backend(isa={isa!r}): mbkernels._C is not built ({C_IMPORT_ERROR})")
    prev_backend, prev_isa = _state.backend, active_isa()
    if isa is not None:
        _C.set_isa(isa)
    _state.backend = backend
    try:
        yield
    finally:
        _state.backend = prev_backend
        if isa is not None:
            _C.set_isa(prev_isa)
