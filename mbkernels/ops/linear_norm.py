"""linear_norm: `norm(dropout(x Wᵀ + bias) [+ residual])` — one GEMM with a fused epilogue.

Serves the attention output, the FFN outputs and the output bottleneck. On CPU in float32 without
dropout the forward runs `_C.linear_norm_forward` (the packed-weight GEMM with residual and norm
fused at store; weights packed once, `_packed.py`); when a gradient is wanted it keeps the pre-norm
`t = x Wᵀ + bias [+ residual]` instead (GEMM, then the norm), so the backward runs no GEMM of the
forward again. The backward: the norm's backward with the bias column sums in `_C`, the gradient
GEMMs on torch. Other dtypes and dropout run the reference. On CUDA, or under
`use_backend("triton")`, both directions run `mbkernels/triton/linear_norm.py`.
"""

from __future__ import annotations

import torch

from mbkernels import backend
from mbkernels.ops import _cpu, reference
from mbkernels.ops._registry import Kernel, OpDef, define


def _supports_cpu(x, weight, bias, norm_weight, norm_bias, residual, norm, eps, dropout_p, seed):
    return dropout_p == 0 and _cpu.float32(x, weight)


def _pre_norm(x, weight, bias, residual):
    """t = x Wᵀ + bias [+ residual] as [rows, N], and x as [rows, K] rows."""
    n, k = weight.shape
    xv, ldx = _cpu.rows(x, k)
    t = x.new_empty((xv.shape[0], n))
    rv, ldr = _cpu.rows(residual, n) if residual is not None else (None, 0)
    _cpu.gemm(xv, ldx, _cpu.packed(weight, bias), t, residual=rv, ld_residual=ldr)
    return t, xv


def _cpu_forward(x, weight, bias, norm_weight, norm_bias, residual, norm, eps, dropout_p, seed, *, save):
    n, k = weight.shape
    if save:
        t, _ = _pre_norm(x, weight, bias, residual)
        return _cpu.norm_forward(norm, t, norm_weight, norm_bias, eps).view(*x.shape[:-1], n), [t]
    xv, ldx = _cpu.rows(x, k)
    y = x.new_empty((*x.shape[:-1], n))
    rv, ldr = _cpu.rows(residual, n) if residual is not None else (None, 0)
    nw, nb = norm_weight.contiguous(), norm_bias.contiguous()
    backend._C.linear_norm_forward(xv.data_ptr(), ldx, xv.shape[0], _cpu.packed(weight, bias), _cpu.ptr(rv), ldr,
                                   norm, nw.data_ptr(), nb.data_ptr(),
                                   eps, y.data_ptr(), n, _cpu.threads())
    return y, []


def _saved_fake(x, weight, *rest):
    return [x.new_empty((x.numel() // x.shape[-1], weight.shape[0]))]


def _cpu_backward(grads, needs_grad, saved, x, weight, bias, norm_weight, norm_bias, residual, norm, eps,
                  dropout_p, seed):
    n, k = weight.shape
    if saved:
        (t,), xv = saved, _cpu.rows(x, k)[0]
    else:
        t, xv = _pre_norm(x, weight, bias, residual)
    g = grads[0].reshape(-1, n).contiguous()
    gt, gnw, gnb, gbias = _cpu.norm_backward(norm, g, t, norm_weight, eps)
    return [torch.mm(gt, weight).view(x.shape) if needs_grad[0] else None,
            torch.mm(gt.t(), xv) if needs_grad[1] else None,
            gbias if bias is not None else None, gnw, gnb,
            gt.view(*x.shape[:-1], n) if residual is not None else None,
            None]  # seed


def _triton_linear_norm(x, weight, norm):
    """The Triton linear_norm module when it runs these inputs, else None."""
    from mbkernels import triton as mbt
    if not mbt.available():
        return None
    from mbkernels.triton import linear_norm as tk
    return tk if tk.supported(x, weight, norm) else None


def _triton_forward(x, weight, bias, norm_weight, norm_bias, residual, norm, eps, dropout_p, seed, *, save):
    tk = _triton_linear_norm(x, weight, norm)
    return tk.linear_norm_forward(x, weight, bias, norm_weight, norm_bias, residual, norm, eps, dropout_p, seed), []


def _triton_backward(grads, needs_grad, saved, x, weight, bias, norm_weight, norm_bias, residual, norm, eps,
                     dropout_p, seed):
    tk = _triton_linear_norm(x, weight, norm)
    got = tk.linear_norm_backward(grads[0], x, weight, bias, norm_weight, norm_bias, residual, norm, eps,
                                  dropout_p, seed)
    return [*got, None]


def _fake(x, weight, *rest):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


LINEAR_NORM = define(OpDef(
    name="linear_norm",
    args=("Tensor x, Tensor weight, Tensor? bias, Tensor norm_weight, Tensor norm_bias, Tensor? residual, "
          "str norm, float eps, float dropout_p, Tensor? seed"),
    outputs=1,
    reference=reference.linear_norm,
    fake=_fake,
    kernels=(Kernel("cpu", _supports_cpu, _cpu_forward, _cpu_backward, _saved_fake),
             Kernel("triton", lambda x, weight, *a: _triton_linear_norm(x, weight, a[4]) is not None,
                    _triton_forward, _triton_backward)),
))


def linear_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                norm_weight: torch.Tensor, norm_bias: torch.Tensor, residual: torch.Tensor | None = None,
                norm: str = "nonorm", eps: float = 1e-12, dropout_p: float = 0.0) -> torch.Tensor:
    """`norm(dropout(x @ weight.T + bias) [+ residual])`; `norm` is "nonorm" or "layernorm"."""
    return LINEAR_NORM(x, weight, bias, norm_weight, norm_bias, residual, norm, eps, dropout_p, None)
