"""nonorm / layernorm: `(x [+ residual]) * weight + bias` and LayerNorm of `x [+ residual]`.

On CPU both run `_C` kernels: NoNorm in float32 and float64 (vectorized per ISA), LayerNorm in
float32 (the GEMM epilogue's row kernel; its backward with deterministic column sums); other dtypes
run the reference. On CUDA, or under `use_backend("triton")`, both directions of both ops run
`mbkernels/triton/nonorm.py`. Neither saves anything: the backward reads only the inputs.
"""

from __future__ import annotations

import torch

from mbkernels import backend
from mbkernels.ops import _cpu, reference
from mbkernels.ops._registry import Kernel, OpDef, define


def _operands(x, weight, bias, residual):
    cols = weight.numel()
    x = x.contiguous()
    return (x, weight.contiguous(), bias.contiguous(), None if residual is None else residual.contiguous(), cols,
            x.numel() // cols if cols else 0)


def _cpu_forward(layernorm):
    def forward(x, weight, bias, residual, eps=0.0, *, save):
        x, w, b, r, cols, rows = _operands(x, weight, bias, residual)
        y = torch.empty_like(x)
        if layernorm:
            backend._C.layernorm_forward(x.data_ptr(), _cpu.ptr(r), w.data_ptr(), b.data_ptr(),
                                         eps, y.data_ptr(), rows, cols, _cpu.threads())
        else:
            backend._C.nonorm_forward(x.data_ptr(), _cpu.ptr(r), w.data_ptr(), b.data_ptr(),
                                      y.data_ptr(), rows, cols, x.dtype == torch.float64, _cpu.threads())
        return y, []
    return forward


def _cpu_backward(layernorm):
    def backward(grads, needs_grad, saved, x, weight, bias, residual, eps=0.0):
        x, w, b, r, cols, rows = _operands(x, weight, bias, residual)
        g = grads[0].contiguous()
        gx, gw, gb = torch.empty_like(x), torch.empty_like(w), torch.empty_like(w)
        if layernorm:
            backend._C.layernorm_backward(g.data_ptr(), x.data_ptr(), _cpu.ptr(r), w.data_ptr(), eps, gx.data_ptr(),
                                          gw.data_ptr(), gb.data_ptr(), rows, cols, _cpu.threads())
        else:
            backend._C.nonorm_backward(g.data_ptr(), x.data_ptr(), _cpu.ptr(r), w.data_ptr(), gx.data_ptr(),
                                       gw.data_ptr(), gb.data_ptr(), rows, cols, x.dtype == torch.float64,
                                       _cpu.threads())
        return [gx, gw, gb, gx if residual is not None else None]  # x + residual: one gradient
    return backward


def _supports_nonorm(x, weight, bias, residual):
    return x.dtype in (torch.float32, torch.float64)


def _supports_layernorm(x, weight, bias, residual, eps):
    return x.dtype == torch.float32


def _triton_norm(x, weight):
    """The Triton norm module when it runs these inputs, else None."""
    from mbkernels import triton as mbt
    if not mbt.available():
        return None
    from mbkernels.triton import nonorm as tk
    return tk if tk.supported(x, weight) else None


def _triton(layernorm):
    def forward(x, weight, bias, residual, eps=0.0, *, save):
        return _triton_norm(x, weight).norm_forward(x, weight, bias, residual, layernorm, eps), []

    def backward(grads, needs_grad, saved, x, weight, bias, residual, eps=0.0):
        gx, gw, gb = _triton_norm(x, weight).norm_backward(grads[0], x, weight, residual, layernorm, eps)
        return [gx, gw, gb, gx if residual is not None else None]

    return Kernel("triton", lambda x, weight, *rest: _triton_norm(x, weight) is not None, forward, backward)


def _fake(x, *rest):
    return x.new_empty(x.shape)


NONORM = define(OpDef(
    name="nonorm",
    args="Tensor x, Tensor weight, Tensor bias, Tensor? residual",
    outputs=1,
    reference=reference.nonorm,
    fake=_fake,
    kernels=(Kernel("cpu", _supports_nonorm, _cpu_forward(False), _cpu_backward(False)), _triton(False)),
))

LAYERNORM = define(OpDef(
    name="layernorm",
    args="Tensor x, Tensor weight, Tensor bias, Tensor? residual, float eps",
    outputs=1,
    reference=reference.layernorm,
    fake=_fake,
    kernels=(Kernel("cpu", _supports_layernorm, _cpu_forward(True), _cpu_backward(True)), _triton(True)),
))


def nonorm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """NoNorm of `x [+ residual]` over the last dimension."""
    return NONORM(x, weight, bias, residual)


def layernorm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
              residual: torch.Tensor | None = None, eps: float = 1e-12) -> torch.Tensor:
    """LayerNorm of `x [+ residual]` over the last dimension."""
    return LAYERNORM(x, weight, bias, residual, eps)
