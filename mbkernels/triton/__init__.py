"""Triton kernels for the mbkernels ops (the CUDA path, and CPU tensors under `TRITON_INTERPRET=1`).

One file per op, named as the op (`nonorm.py`, `linear_norm.py`, `attention.py`); each holds the
`@triton.jit` kernels and plain launchers (`*_forward`, `*_backward`) that the op adapters in
`mbkernels/ops/` call. Nothing here imports Triton at package import: `mbkernels` imports fine where
Triton is missing, and the adapters fall back to the reference (`available()` is False).
"""

from __future__ import annotations

import functools
import os


@functools.cache
def available() -> bool:
    """Whether Triton imports (the kernels in this package can be launched)."""
    try:
        import triton
        import triton.language
    except (ImportError, AttributeError, RuntimeError):  # missing or broken install: the reference runs
        return False
    del triton
    return True


def interpreting() -> bool:
    """Whether Triton runs in its CPU interpreter (read from the environment, as Triton does)."""
    return os.environ.get("TRITON_INTERPRET") == "1"
