"""linear_norm in Triton: `norm(dropout(x Wᵀ + bias) [+ residual])`, one GEMM with a fused epilogue.

Forward: `_linear_norm_fwd` computes a [BLOCK_M, N] output tile (the whole row: N ≤ 512) with
`tl.dot` over K, then bias, dropout (the hash of `ops/dropout.py`, recomputed, never stored),
residual and NoNorm / LayerNorm over the row before its one store. Backward: the same kernel with
the norm switched off recomputes the pre-norm row `z`; `nonorm._norm_bwd` gives dz, dgamma, dbeta
(deterministic partial sums) and applies the dropout mask to dz in the same pass; dX and dW are two
`torch.matmul` GEMMs and dbias a column sum.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mbkernels.triton import dropout as tdrop
from mbkernels.triton import interpreting
from mbkernels.triton import nonorm as tnorm

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_N = 512
NORMS = {"none": 0, "nonorm": 1, "layernorm": 2}


@triton.jit
def _linear_norm_fwd(X, W, BIAS, R, NW, NB, Y, M, N, K, eps, key, threshold, scale,
                     HAS_BIAS: tl.constexpr, HAS_R: tl.constexpr, NORM: tl.constexpr, DROPOUT: tl.constexpr,
                     FP32_DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    rmask = rows < M
    cmask = cols < N
    rows64 = rows.to(tl.int64)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        kmask = ks < K
        x = tl.load(X + rows64[:, None] * K + ks[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)
        w = tl.load(W + cols[None, :].to(tl.int64) * K + ks[:, None], mask=kmask[:, None] & cmask[None, :],
                    other=0.0)
        if FP32_DOT:  # fp32 accuracy (and the interpreter, whose bf16 dot is wrong)
            acc += tl.dot(x.to(tl.float32), w.to(tl.float32), input_precision="ieee")
        else:
            acc += tl.dot(x, w)
    mask = rmask[:, None] & cmask[None, :]
    offs = rows64[:, None] * N + cols[None, :]
    if HAS_BIAS:
        acc += tl.load(BIAS + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    if DROPOUT:
        acc = tl.where(tdrop.keep(offs, key, threshold), acc * scale, 0.0)
    if HAS_R:
        acc += tl.load(R + offs, mask=mask, other=0.0).to(tl.float32)
    if NORM == 2:
        mean = tl.sum(acc, axis=1) / N
        xc = tl.where(mask, acc - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / N + eps)
        acc = xc * rstd[:, None]
    if NORM != 0:
        nw = tl.load(NW + cols, mask=cmask, other=0.0).to(tl.float32)
        nb = tl.load(NB + cols, mask=cmask, other=0.0).to(tl.float32)
        acc = acc * nw[None, :] + nb[None, :]
    tl.store(Y + offs, acc.to(Y.dtype.element_ty), mask=mask)


def supported(x, weight, norm: str) -> bool:
    return (x.dtype in DTYPES and weight.dtype == x.dtype and norm in ("nonorm", "layernorm")
            and 0 < weight.shape[0] <= MAX_N and x.shape[-1] == weight.shape[1] and x.shape[-1] > 0)


def _blocks(n: int) -> tuple[int, int, int]:
    block_n = max(16, triton.next_power_of_2(n))
    block_m = {16: 64, 32: 64, 64: 64, 128: 64, 256: 32}.get(block_n, 16)
    return block_m, block_n, 32


def linear_norm_forward(x, weight, bias, norm_weight, norm_bias, residual, norm: str, eps: float,
                        dropout_p: float, seed) -> torch.Tensor:
    """`norm(dropout(x Wᵀ + bias) [+ residual])`; `norm="none"` gives the pre-norm row."""
    k, n = weight.shape[1], weight.shape[0]
    x2 = x.reshape(-1, k).contiguous()
    m = x2.shape[0]
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    r2 = residual.reshape(-1, n).contiguous() if residual is not None else y
    drop = dropout_p > 0
    key, threshold, scale = tdrop.dropout_params(dropout_p, seed, 0) if drop else (0, 0, 1.0)
    block_m, block_n, block_k = _blocks(n)
    if m:
        _linear_norm_fwd[(triton.cdiv(m, block_m),)](
            x2, weight.contiguous(), bias.contiguous() if bias is not None else y, r2,
            norm_weight.contiguous() if norm != "none" else y, norm_bias.contiguous() if norm != "none" else y,
            y, m, n, k, eps, key, threshold, scale,
            HAS_BIAS=bias is not None, HAS_R=residual is not None, NORM=NORMS[norm], DROPOUT=drop,
            FP32_DOT=x.dtype == torch.float32 or interpreting(),
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)
    return y.view(*x.shape[:-1], n)


def linear_norm_backward(dy, x, weight, bias, norm_weight, norm_bias, residual, norm: str, eps: float,
                         dropout_p: float, seed):
    """(dx, dweight, dbias or None, dnorm_weight, dnorm_bias, dresidual or None)."""
    k, n = weight.shape[1], weight.shape[0]
    z = linear_norm_forward(x, weight, bias, None, None, residual, "none", 0.0, dropout_p, seed)
    drop = (dropout_p, seed, 0) if dropout_p > 0 else None
    outs = tnorm.norm_backward(dy, z, norm_weight, None, norm == "layernorm", eps, dropout=drop)
    dz, dnw, dnb = outs[:3]
    dlin = (outs[3] if drop else dz).reshape(-1, n)
    x2 = x.reshape(-1, k)
    dx = torch.matmul(dlin, weight).view(x.shape)
    dw = torch.matmul(dlin.t(), x2)
    db = dlin.sum(0) if bias is not None else None
    return dx, dw, db, dnw, dnb, (dz if residual is not None else None)
