"""`mbkernels.info()`: versions, ISAs, devices, threads, and which backend runs each op."""

from __future__ import annotations

import platform

import torch

from mbkernels import backend
from mbkernels.ops import OPS


def op_backends() -> dict[str, dict[str, str]]:
    """For each op: what runs it on CPU and on CUDA under the current backend (not a promise of
    speed: a "reference" entry means no kernel exists there yet and the reference runs inside)."""
    b = backend.current_backend()
    table = {}
    for name, d in OPS.items():
        devices = {k.device for k in d.kernels}
        if b == "reference":
            table[name] = {"cpu": "reference (backend)", "cuda": "reference (backend)"}
            continue
        if b == "triton":
            cpu = "triton (interpreter)" if "triton" in devices else "reference (no Triton kernel yet)"
        elif backend._C is None:
            cpu = "reference (mbkernels._C not built)"
        else:
            cpu = f"C++ {backend.active_isa()}" if "cpu" in devices else "reference (no C++ kernel yet)"
        cuda = "triton" if "triton" in devices else "reference (no Triton kernel yet)"
        table[name] = {"cpu": cpu, "cuda": cuda}
    return table


def info() -> dict:
    """A dict describing this installation; `mbkernels info` prints it."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    from mbkernels import __version__

    return {
        "mbkernels": __version__,
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "compiled_isas": backend.compiled_isas(),
        "supported_isas": backend.supported_isas(),
        "active_isa": backend.active_isa(),
        # fp32, int8, and int8 with 7-bit weights where that has a kernel of its own
        "gemm_kernels": ", ".join(dict.fromkeys(k for k in (backend._C.gemm_kernel(), backend._C.int8_gemm_kernel(),
                                                            backend._C.int8_gemm_kernel(7)) if k))
        if backend._C is not None else None,
        "extension": "built" if backend._C is not None else f"not built ({backend.C_IMPORT_ERROR})",
        "backend": backend.current_backend(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
        "ops": op_backends(),
    }
