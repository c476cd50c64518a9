"""linear_norm: `norm(dropout(x Wᵀ + bias) [+ residual])` — one GEMM with a fused epilogue.

Serves the attention output, the FFN outputs and the output bottleneck. Runs the reference inside
its custom op until its kernels land.
"""

from __future__ import annotations

import torch

from mbkernels import backend
from mbkernels.ops import reference
from mbkernels.ops._registry import OpDef, define
from mbkernels.ops.dropout import new_seed


def _fake(x, weight, bias, norm_weight, norm_bias, residual, norm, eps, dropout_p, seed):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


LINEAR_NORM = define(OpDef(
    name="linear_norm",
    args=("Tensor x, Tensor weight, Tensor? bias, Tensor norm_weight, Tensor norm_bias, Tensor? residual, "
          "str norm, float eps, float dropout_p, Tensor? seed"),
    returns="Tensor",
    reference_forward=reference.linear_norm,
    fake=_fake,
))


def linear_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                norm_weight: torch.Tensor, norm_bias: torch.Tensor, residual: torch.Tensor | None = None,
                norm: str = "nonorm", eps: float = 1e-12, dropout_p: float = 0.0) -> torch.Tensor:
    """`norm(dropout(x @ weight.T + bias) [+ residual])`; `norm` is "nonorm" or "layernorm"."""
    if backend.current_backend() == "reference":
        return reference.linear_norm(x, weight, bias, norm_weight, norm_bias, residual, norm, eps, dropout_p)
    seed = new_seed() if dropout_p > 0 else None
    return torch.ops.mbkernels.linear_norm(x, weight, bias, norm_weight, norm_bias, residual, norm, eps,
                                           dropout_p, seed)
