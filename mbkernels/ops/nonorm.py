"""nonorm / layernorm: `(x [+ residual]) * weight + bias` and LayerNorm of `x [+ residual]`.

On CPU both run C++ kernels: NoNorm `mbkernels_cpu::nonorm_forward/backward` (fp32/fp64, vectorized
per ISA), LayerNorm `mbkernels_cpu::layernorm_forward/backward` (fp32: the GEMM epilogue's row
kernel and its backward with deterministic column sums; other dtypes run the reference).
On CUDA, or under `use_backend("triton")`, both directions of both ops run `mbkernels/triton/nonorm.py`.
"""

from __future__ import annotations

import torch

from mbkernels import backend
from mbkernels.ops import reference
from mbkernels.ops._registry import OpDef, _tensors, define, no_grad_placeholder

_C_DTYPES = (torch.float32, torch.float64, torch.float16)  # fp16 reaches C++, which names the error


def _nonorm_cpu(x, weight, bias, residual):
    if x.dtype not in _C_DTYPES:
        return NotImplemented
    return torch.ops.mbkernels_cpu.nonorm_forward(x, weight, bias, residual)


def _nonorm_cpu_backward(grads, needs_grad, x, weight, bias, residual):
    if x.dtype not in _C_DTYPES:
        return NotImplemented
    gx, gw, gb = torch.ops.mbkernels_cpu.nonorm_backward(grads[0], x, weight, residual)
    none = no_grad_placeholder(_tensors((x, weight, bias, residual)))
    return [gx if needs_grad[0] else none, gw if needs_grad[1] else none,
            gb if needs_grad[2] else none, gx.clone() if needs_grad[3] else none]


def _layernorm_cpu(x, weight, bias, residual, eps):
    if x.dtype != torch.float32:
        return NotImplemented
    return torch.ops.mbkernels_cpu.layernorm_forward(x, weight, bias, residual, eps)


def _layernorm_cpu_backward(grads, needs_grad, x, weight, bias, residual, eps):
    if x.dtype != torch.float32:
        return NotImplemented
    gx, gw, gb = torch.ops.mbkernels_cpu.layernorm_backward(grads[0], x, weight, residual, eps)
    flat = _tensors((x, weight, bias, residual))
    # A fresh placeholder per slot: custom-op outputs may not alias each other.
    got = (gx, gw, gb, gx.clone() if residual is not None else None)
    return [g if need and g is not None else no_grad_placeholder(flat) for g, need in zip(got, needs_grad)]


def _triton_norm(x, weight):
    """The Triton norm module when it runs these inputs, else None (the reference runs)."""
    from mbkernels import triton as mbt
    if not mbt.available():
        return None
    from mbkernels.triton import nonorm as tk
    return tk if tk.supported(x, weight) else None


def _norm_triton(layernorm):
    def forward(x, weight, bias, residual, eps=0.0):
        tk = _triton_norm(x, weight)
        if tk is None:
            return NotImplemented
        return tk.norm_forward(x, weight, bias, residual, layernorm, eps)
    return forward


def _norm_triton_backward(layernorm):
    def backward(grads, needs_grad, x, weight, bias, residual, eps=0.0):
        tk = _triton_norm(x, weight)
        if tk is None:
            return NotImplemented
        gx, gw, gb = tk.norm_backward(grads[0], x, weight, residual, layernorm, eps)
        flat = _tensors((x, weight, bias, residual))
        # A fresh placeholder per slot: custom-op outputs may not alias each other.
        got = (gx, gw, gb, gx.clone() if residual is not None else None)
        return [g if need and g is not None else no_grad_placeholder(flat) for g, need in zip(got, needs_grad)]
    return backward


def _norm_fake(x, weight, bias, residual, *rest):
    return x.new_empty(x.shape)


NONORM = define(OpDef(
    name="nonorm",
    args="Tensor x, Tensor weight, Tensor bias, Tensor? residual",
    returns="Tensor",
    reference_forward=reference.nonorm,
    fake=_norm_fake,
    cpu=_nonorm_cpu,
    cpu_backward=_nonorm_cpu_backward,
    triton=_norm_triton(False),
    triton_backward=_norm_triton_backward(False),
))

LAYERNORM = define(OpDef(
    name="layernorm",
    args="Tensor x, Tensor weight, Tensor bias, Tensor? residual, float eps",
    returns="Tensor",
    reference_forward=reference.layernorm,
    fake=_norm_fake,
    cpu=_layernorm_cpu,
    cpu_backward=_layernorm_cpu_backward,
    triton=_norm_triton(True),
    triton_backward=_norm_triton_backward(True),
))


def nonorm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """NoNorm of `x [+ residual]` over the last dimension."""
    if backend.current_backend() == "reference":
        return reference.nonorm(x, weight, bias, residual)
    return torch.ops.mbkernels.nonorm(x, weight, bias, residual)


def layernorm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
              residual: torch.Tensor | None = None, eps: float = 1e-12) -> torch.Tensor:
    """LayerNorm of `x [+ residual]` over the last dimension."""
    if backend.current_backend() == "reference":
        return reference.layernorm(x, weight, bias, residual, eps)
    return torch.ops.mbkernels.layernorm(x, weight, bias, residual, eps)
