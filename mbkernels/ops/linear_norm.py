"""linear_norm: `norm(dropout(x Wᵀ + bias) [+ residual])` — one GEMM with a fused epilogue.

Serves the attention output, the FFN outputs and the output bottleneck. On CPU the fp32 forward
without dropout runs `mbkernels_cpu::linear_norm_forward` (packed-weight GEMM, residual and norm
fused at store, weights packed once and cached) and its backward `mbkernels_cpu::linear_norm_backward`
(the norm's backward and the bias column sums fused in C++, the gradient GEMMs on ATen). In
training `linear_norm` calls `mbkernels::linear_norm_train`, which keeps the pre-norm values for
the backward; the frozen op's backward recomputes them on the packed GEMM. Other dtypes and
dropout run the reference inside the custom op.
"""

from __future__ import annotations

import torch

from mbkernels import backend
from mbkernels.ops import reference
from mbkernels.ops._registry import OpDef, _tensors, define, define_saving, no_grad_placeholder, saving_applies
from mbkernels.ops.dropout import new_seed


def _linear_norm_cpu(x, weight, bias, norm_weight, norm_bias, residual, norm, eps, dropout_p, seed):
    # The C++ kernel is the fp32 path without dropout; the reference runs the rest. Only x and weight
    # are looked at (this runs on every call): a float32 x with other tensors of another dtype is an
    # error either way, and the C++ op names the offending argument.
    if dropout_p > 0 or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return NotImplemented
    return torch.ops.mbkernels_cpu.linear_norm_forward(x, weight, bias, norm_weight, norm_bias, residual,
                                                       norm, eps)


def _linear_norm_cpu_backward(grads, needs_grad, x, weight, bias, norm_weight, norm_bias, residual, norm, eps,
                              dropout_p, seed):
    if dropout_p > 0 or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return NotImplemented
    return _train_cpu_backward(grads, needs_grad, [], x, weight, bias, norm_weight, norm_bias, residual, norm,
                               eps, dropout_p, seed)


def _train_cpu(x, weight, bias, norm_weight, norm_bias, residual, norm, eps, dropout_p, seed):
    y, t = torch.ops.mbkernels_cpu.linear_norm_forward_train(x, weight, bias, norm_weight, norm_bias, residual,
                                                             norm, eps)
    return y, [t]


def _train_saved_fake(x, weight, *rest):
    return [x.new_empty((x.numel() // x.shape[-1], weight.shape[0]))]


def _train_cpu_backward(grads, needs_grad, saved, x, weight, bias, norm_weight, norm_bias, residual, norm, eps,
                        dropout_p, seed):
    """The C++ backward; `saved` is the pre-norm `_train_cpu` kept, or empty (it is recomputed)."""
    got = torch.ops.mbkernels_cpu.linear_norm_backward(grads[0], x, weight, bias, norm_weight, norm_bias,
                                                       residual, norm, eps, needs_grad[:6], saved)
    return [*got, no_grad_placeholder(_tensors((x, seed)))]  # seed: no gradient


def _triton_linear_norm(x, weight, norm):
    """The Triton linear_norm module when it runs these inputs, else None (the reference runs)."""
    from mbkernels import triton as mbt
    if not mbt.available():
        return None
    from mbkernels.triton import linear_norm as tk
    return tk if tk.supported(x, weight, norm) else None


def _linear_norm_triton(x, weight, bias, norm_weight, norm_bias, residual, norm, eps, dropout_p, seed):
    tk = _triton_linear_norm(x, weight, norm)
    if tk is None:
        return NotImplemented
    return tk.linear_norm_forward(x, weight, bias, norm_weight, norm_bias, residual, norm, eps, dropout_p, seed)


def _linear_norm_triton_backward(grads, needs_grad, x, weight, bias, norm_weight, norm_bias, residual, norm,
                                 eps, dropout_p, seed):
    tk = _triton_linear_norm(x, weight, norm)
    if tk is None:
        return NotImplemented
    got = tk.linear_norm_backward(grads[0], x, weight, bias, norm_weight, norm_bias, residual, norm, eps,
                                  dropout_p, seed)
    flat = _tensors((x, weight, bias, norm_weight, norm_bias, residual, seed))
    # A fresh placeholder per slot: custom-op outputs may not alias each other.
    return [g if need and g is not None else no_grad_placeholder(flat) for g, need in zip((*got, None), needs_grad)]


def _fake(x, weight, bias, norm_weight, norm_bias, residual, norm, eps, dropout_p, seed):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


LINEAR_NORM = define(OpDef(
    name="linear_norm",
    args=("Tensor x, Tensor weight, Tensor? bias, Tensor norm_weight, Tensor norm_bias, Tensor? residual, "
          "str norm, float eps, float dropout_p, Tensor? seed"),
    returns="Tensor",
    reference_forward=reference.linear_norm,
    fake=_fake,
    cpu=_linear_norm_cpu,
    cpu_backward=_linear_norm_cpu_backward,
    triton=_linear_norm_triton,
    triton_backward=_linear_norm_triton_backward,
))
define_saving(LINEAR_NORM, _train_cpu, _train_saved_fake, _train_cpu_backward)


def linear_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                norm_weight: torch.Tensor, norm_bias: torch.Tensor, residual: torch.Tensor | None = None,
                norm: str = "nonorm", eps: float = 1e-12, dropout_p: float = 0.0) -> torch.Tensor:
    """`norm(dropout(x @ weight.T + bias) [+ residual])`; `norm` is "nonorm" or "layernorm"."""
    if backend.current_backend() == "reference":
        return reference.linear_norm(x, weight, bias, norm_weight, norm_bias, residual, norm, eps, dropout_p)
    seed = new_seed() if dropout_p > 0 else None
    if dropout_p == 0 and saving_applies([x, weight, bias, norm_weight, norm_bias, residual]):
        return torch.ops.mbkernels.linear_norm_train(x, weight, bias, norm_weight, norm_bias, residual, norm,
                                                     eps, dropout_p, seed)[0]
    return torch.ops.mbkernels.linear_norm(x, weight, bias, norm_weight, norm_bias, residual, norm, eps,
                                           dropout_p, seed)
