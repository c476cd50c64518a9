"""linear_norm in Triton: `norm(dropout(x Wᵀ + bias) [+ residual])`, one GEMM with a fused epilogue.

Forward: `_linear_norm_fwd` computes a [BLOCK_M, N] output tile (the whole row: N ≤ 512) with
`tl.dot` over K, then bias, dropout (the hash of `ops/dropout.py`, recomputed, never stored),
residual and NoNorm / LayerNorm over the row before its one store. A second grid axis runs G
projections of the same input side by side (`grouped_forward`: weight [G·N, K], output [M, G·N],
the norm on the first `norm_groups` of them): bottleneck_attention's one GEMM over the 512-wide
input for both bottlenecks and V.

Wider rows (the IB-BERT teacher's 1024, up to the norm kernel's 8192) do not fit one tile: the
second grid axis then also runs over column tiles of BLOCK_N (group × tile), the kernel stops at
the pre-norm row (bias, dropout, residual), and `nonorm.norm_forward` normalizes the normed groups
in a second pass — one extra read and write of the row, for widths MobileBERT never uses.

Backward: the forward kernel with the norm off recomputes the pre-norm row `z`; `nonorm._norm_bwd`
gives dz, dgamma, dbeta (deterministic partial sums) and applies the dropout mask to dz in the same
pass; then two Triton GEMMs (`gemm.py`): dX = dY W (optionally times an activation's derivative,
for the FFN whose output this is) and dW = dYᵀ X with dbias as its row sums — split over the token
axis with a fixed-order second pass, no atomics.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mbkernels.triton import dropout as tdrop
from mbkernels.triton import gemm
from mbkernels.triton import interpreting
from mbkernels.triton import nonorm as tnorm
from mbkernels.triton.rounding import cast

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_N = 512  # widest row the fused norm epilogue keeps in one tile; wider rows take two passes
TILE_N = 128  # the column tile of those wider rows
NORMS = {"none": 0, "nonorm": 1, "layernorm": 2}


@triton.jit
def _linear_norm_fwd(X, W, BIAS, R, NW, NB, Y, M, N, K, sxm, srm, sym, norm_groups, eps, key, threshold, scale,
                     col_tiles, HAS_BIAS: tl.constexpr, HAS_R: tl.constexpr, NORM: tl.constexpr, DROPOUT: tl.constexpr,
                     FP32_DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    g = tl.program_id(1) // col_tiles  # NORM needs the whole row: col_tiles == 1 there
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = (tl.program_id(1) % col_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < M
    cmask = cols < N
    rows64 = rows.to(tl.int64)
    gcols = g * N + cols  # this group's rows of W, entries of bias / norm parameters, columns of Y
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        kmask = ks < K
        x = tl.load(X + rows64[:, None] * sxm + ks[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)
        w = tl.load(W + gcols[None, :].to(tl.int64) * K + ks[:, None], mask=kmask[:, None] & cmask[None, :],
                    other=0.0)
        acc += gemm.dot(x, w, FP32_DOT)
    mask = rmask[:, None] & cmask[None, :]
    if HAS_BIAS:
        acc += tl.load(BIAS + gcols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    if DROPOUT:
        acc = tl.where(tdrop.keep(rows64[:, None] * N + cols[None, :], key, threshold), acc * scale, 0.0)
    if HAS_R:
        acc += tl.load(R + rows64[:, None] * srm + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if NORM != 0:
        if g < norm_groups:
            acc = tnorm.norm_rows(acc, mask, gcols, cmask, NW, NB, N, eps, NORM == 2)
    tl.store(Y + rows64[:, None] * sym + gcols[None, :], cast(acc, Y.dtype.element_ty), mask=mask)


def supported(x, weight, norm: str) -> bool:
    return (x.dtype in DTYPES and weight.dtype == x.dtype and norm in ("nonorm", "layernorm")
            and 0 < weight.shape[0] <= tnorm.MAX_N and x.shape[-1] == weight.shape[1] and x.shape[-1] > 0)


def _blocks(n: int) -> tuple[int, int, int]:
    if n > MAX_N:
        return 64, TILE_N, 32
    block_n = max(16, triton.next_power_of_2(n))
    block_m = {16: 64, 32: 64, 64: 64, 128: 64, 256: 32}.get(block_n, 16)
    return block_m, block_n, 32


def warps(block_m: int, block_n: int) -> int:
    """8 warps for row tiles of 8K values (16 × 512, 64 × 128): no register spills on sm_90 in
    fp32 or bf16 (cuobjdump -res-usage), where 4 warps spill in fp32."""
    return 8 if block_m * block_n >= 8192 else 4


def rows_of(t: torch.Tensor, n: int) -> torch.Tensor:
    """t as [rows, n] with unit column stride, without a copy where its layout allows."""
    t2 = t.reshape(-1, n)
    return t2 if t2.stride(1) == 1 or t2.shape[0] == 0 else t2.contiguous()


def grouped_forward(x2, weight, bias, norm_weight, norm_bias, norm: str, norm_groups: int, eps: float,
                    groups: int, residual2=None, dropout_p: float = 0.0, seed=None, stream: int = 0):
    """[M, G·N]: G projections of the rows x2 [M, K] (weight [G·N, K], bias [G·N]); the norm (its
    parameters [norm_groups·N]) applies to the first `norm_groups` groups. Residual and dropout
    apply to G = 1 only."""
    m, k = x2.shape
    n = weight.shape[0] // groups
    norm = norm if norm_groups else "none"
    if n > MAX_N and norm != "none":  # the pre-norm rows by column tiles, then the norm kernel
        y = grouped_forward(x2, weight, bias, None, None, "none", 0, 0.0, groups, residual2, dropout_p, seed, stream)
        if groups == 1:
            return tnorm.norm_forward(y, norm_weight, norm_bias, None, norm == "layernorm", eps)
        for j in range(norm_groups):
            seg = y[:, j * n:(j + 1) * n]
            part = slice(j * n, (j + 1) * n)
            seg.copy_(tnorm.norm_forward(seg, norm_weight[part], norm_bias[part], None, norm == "layernorm", eps))
        return y
    y = torch.empty((m, groups * n), dtype=x2.dtype, device=x2.device)
    drop = dropout_p > 0
    assert groups == 1 or (residual2 is None and not drop)
    key, threshold, scale = tdrop.dropout_params(dropout_p, seed, stream) if drop else (0, 0, 1.0)
    block_m, block_n, block_k = _blocks(n)
    r2 = residual2 if residual2 is not None else y
    if m:
        col_tiles = triton.cdiv(n, block_n)
        _linear_norm_fwd[(triton.cdiv(m, block_m), groups * col_tiles)](
            x2, weight.contiguous(), bias.contiguous() if bias is not None else y, r2,
            norm_weight.contiguous() if norm != "none" else y, norm_bias.contiguous() if norm != "none" else y,
            y, m, n, k, x2.stride(0), r2.stride(0), y.stride(0), norm_groups, eps, key, threshold, scale, col_tiles,
            HAS_BIAS=bias is not None, HAS_R=residual2 is not None, NORM=NORMS[norm], DROPOUT=drop,
            FP32_DOT=x2.dtype == torch.float32 or interpreting(),
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps(block_m, block_n))
    return y


def linear_norm_forward(x, weight, bias, norm_weight, norm_bias, residual, norm: str, eps: float,
                        dropout_p: float, seed, stream: int = 0) -> torch.Tensor:
    """`norm(dropout(x Wᵀ + bias) [+ residual])`; `norm="none"` gives the pre-norm row."""
    k, n = weight.shape[1], weight.shape[0]
    r2 = rows_of(residual, n) if residual is not None else None
    y = grouped_forward(rows_of(x, k), weight, bias, norm_weight, norm_bias, norm, 1, eps, 1, r2,
                        dropout_p, seed, stream)
    return y.view(*x.shape[:-1], n)


def linear_norm_backward(dy, x, weight, bias, norm_weight, norm_bias, residual, norm: str, eps: float,
                         dropout_p: float, seed, stream: int = 0, act_grad_at=None, act: str | None = None):
    """(dx, dweight, dbias or None, dnorm_weight, dnorm_bias, dresidual or None).

    With `act_grad_at` (x = act(act_grad_at), an FFN's intermediate) dx is the gradient at the
    pre-activation instead: the dX GEMM's epilogue multiplies by act'(act_grad_at).
    """
    k, n = weight.shape[1], weight.shape[0]
    z = linear_norm_forward(x, weight, bias, None, None, residual, "none", 0.0, dropout_p, seed, stream)
    drop = (dropout_p, seed, stream) if dropout_p > 0 else None
    outs = tnorm.norm_backward(dy, z, norm_weight, None, norm == "layernorm", eps, dropout=drop)
    dz, dnw, dnb = outs[:3]
    dlin = (outs[3] if drop else dz).reshape(-1, n)
    x2 = rows_of(x, k)
    dx = gemm.matmul(dlin, weight, x.dtype, act_grad_at=act_grad_at, act_grad=act).view(x.shape)
    dw, db = gemm.weight_grad(dlin, x2, weight.dtype, bias is not None)
    return dx, dw, db, dnw, dnb, (dz if residual is not None else None)
