"""nonorm / layernorm in Triton: `(x [+ r]) * w + b` and LayerNorm of `x [+ r]` over the last dim.

Kernels: `_norm_fwd` (a [BLOCK_M, N] row tile per program, fp32 math, one store), `_norm_bwd` (dx per
row; dgamma/dbeta as per-program partial sums over a contiguous slab of rows, written to a
[programs, N] buffer) and `_sum_partials` (the second, fixed-order reduction of that buffer): no
atomics, the same bits on every run. `_norm_bwd` also serves `linear_norm`'s backward: it can apply
that op's dropout mask to dx (`DROPOUT`), recomputed from the seed as in `ops/dropout.py`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mbkernels.triton import dropout as tdrop
from mbkernels.triton.rounding import cast

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_N = 8192  # one row per block row; wider rows fall back to the reference


@triton.jit
def norm_rows(x, mask, cols, cmask, NW, NB, n, eps, LAYERNORM: tl.constexpr):
    """NoNorm (x·w + b) or LayerNorm of fp32 rows x [BLOCK_M, BLOCK_N] over their n valid columns
    (the epilogue of every kernel that ends in a norm)."""
    if LAYERNORM:
        mean = tl.sum(x, axis=1) / n
        xc = tl.where(mask, x - mean[:, None], 0.0)
        x = xc * (1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / n + eps))[:, None]
    w = tl.load(NW + cols, mask=cmask, other=0.0).to(tl.float32)
    b = tl.load(NB + cols, mask=cmask, other=0.0).to(tl.float32)
    return x * w[None, :] + b[None, :]


@triton.jit
def _norm_fwd(X, R, W, B, Y, M, N, eps,
              HAS_R: tl.constexpr, LAYERNORM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    rmask = rows < M
    cmask = cols < N
    mask = rmask[:, None] & cmask[None, :]
    offs = rows[:, None].to(tl.int64) * N + cols[None, :]
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_R:
        x += tl.load(R + offs, mask=mask, other=0.0).to(tl.float32)
    y = norm_rows(x, mask, cols, cmask, W, B, N, eps, LAYERNORM)
    tl.store(Y + offs, cast(y, Y.dtype.element_ty), mask=mask)


@triton.jit
def _norm_bwd(DY, X, R, W, DX, DXD, PW, PB, M, N, eps, rows_per_prog, key, threshold, scale,
              HAS_R: tl.constexpr, LAYERNORM: tl.constexpr, DROPOUT: tl.constexpr, DY_DROPOUT: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    cmask = cols < N
    w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK_N], dtype=tl.float32)
    db = tl.zeros([BLOCK_N], dtype=tl.float32)
    first = pid * rows_per_prog
    for start in range(0, rows_per_prog, BLOCK_M):
        rows = first + start + tl.arange(0, BLOCK_M)
        rmask = (rows < M) & (start + tl.arange(0, BLOCK_M) < rows_per_prog)
        mask = rmask[:, None] & cmask[None, :]
        offs = rows[:, None].to(tl.int64) * N + cols[None, :]
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_R:
            x += tl.load(R + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
        if DY_DROPOUT:  # the norm's output went through dropout (embedding): its gradient did too
            dy = tl.where(tdrop.keep(offs, key, threshold), dy * scale, 0.0)
        wdy = dy * w[None, :]
        if LAYERNORM:
            mean = tl.sum(x, axis=1) / N
            xc = tl.where(mask, x - mean[:, None], 0.0)
            rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / N + eps)
            xhat = xc * rstd[:, None]
            c1 = tl.sum(xhat * wdy, axis=1) / N
            c2 = tl.sum(wdy, axis=1) / N
            dx = (wdy - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
            dw += tl.sum(dy * xhat, axis=0)
        else:
            dx = wdy
            dw += tl.sum(dy * x, axis=0)
        db += tl.sum(dy, axis=0)
        tl.store(DX + offs, cast(dx, DX.dtype.element_ty), mask=mask)
        if DROPOUT:
            kept = tdrop.keep(offs, key, threshold)
            tl.store(DXD + offs, cast(tl.where(kept, dx * scale, 0.0), DXD.dtype.element_ty), mask=mask)
    tl.store(PW + pid * N + cols, dw, mask=cmask)
    tl.store(PB + pid * N + cols, db, mask=cmask)


@triton.jit
def _sum_partials(P, OUT, G, N, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr):
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < N
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for g0 in range(0, G, BLOCK_G):
        g = g0 + tl.arange(0, BLOCK_G)
        p = tl.load(P + g[:, None] * N + cols[None, :], mask=(g < G)[:, None] & cmask[None, :], other=0.0)
        acc += tl.sum(p, axis=0)
    tl.store(OUT + cols, cast(acc, OUT.dtype.element_ty), mask=cmask)


def _block_m(block_n: int) -> int:
    return max(1, min(16, 8192 // block_n))


def _rows(t: torch.Tensor, n: int) -> torch.Tensor:
    return t.reshape(-1, n).contiguous()


def supported(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return x.dtype in DTYPES and weight.dtype in DTYPES and 0 < x.shape[-1] <= MAX_N


def norm_forward(x, weight, bias, residual, layernorm: bool, eps: float) -> torch.Tensor:
    """The norm of `x [+ residual]` over the last dimension, in x's dtype."""
    n = x.shape[-1]
    x2 = _rows(x, n)
    r2 = _rows(residual, n) if residual is not None else x2
    y = torch.empty_like(x2)
    m = x2.shape[0]
    block_n = triton.next_power_of_2(n)
    block_m = _block_m(block_n)
    if m:
        _norm_fwd[(triton.cdiv(m, block_m),)](
            x2, r2, weight.contiguous(), bias.contiguous(), y, m, n, eps,
            HAS_R=residual is not None, LAYERNORM=layernorm, BLOCK_M=block_m, BLOCK_N=block_n)
    return y.view(x.shape)


def sum_partials(partials: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Column sums of a [G, N] fp32 buffer in a fixed order (the second reduction pass)."""
    g, n = partials.shape
    out = torch.empty(n, dtype=dtype, device=partials.device)
    block_n = min(triton.next_power_of_2(n), 256)
    _sum_partials[(triton.cdiv(n, block_n),)](partials, out, g, n,
                                              BLOCK_G=min(triton.next_power_of_2(max(g, 1)), 64), BLOCK_N=block_n)
    return out


def _programs(m: int, block_m: int, device: torch.device) -> int:
    blocks = triton.cdiv(m, block_m)
    if device.type == "cuda":
        cap = 2 * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        cap = 4  # the interpreter: few programs, large slabs
    return max(1, min(blocks, cap))


def norm_backward(dy, x, weight, residual, layernorm: bool, eps: float, dropout=None, output_dropout=None):
    """(dx, dweight, dbias[, dx with dropout applied]) for the norm of `x [+ residual]`.

    `dropout`: None or (p, seed, stream): also returns `dx * keep / (1 - p)` with keep computed for
    the element index in the contiguous [rows, N] layout (linear_norm's backward through its dropout).
    `output_dropout`: the same for a dropout applied to the norm's output (embedding): dy is masked.
    """
    assert dropout is None or output_dropout is None
    n = x.shape[-1]
    x2, dy2 = _rows(x, n), _rows(dy, n)
    r2 = _rows(residual, n) if residual is not None else x2
    m = x2.shape[0]
    block_n = triton.next_power_of_2(n)
    block_m = _block_m(block_n)
    g = _programs(m, block_m, x.device)
    rows_per_prog = triton.cdiv(triton.cdiv(m, block_m), g) * block_m
    dx = torch.empty_like(x2)
    dxd = torch.empty_like(x2) if dropout is not None else dx
    drop = dropout if dropout is not None else output_dropout
    key, threshold, scale = tdrop.dropout_params(*drop) if drop is not None else (0, 0, 1.0)
    pw = torch.zeros((g, n), dtype=torch.float32, device=x.device)
    pb = torch.zeros((g, n), dtype=torch.float32, device=x.device)
    if m:
        _norm_bwd[(g,)](dy2, x2, r2, weight.contiguous(), dx, dxd, pw, pb, m, n, eps, rows_per_prog,
                        key, threshold, scale,
                        HAS_R=residual is not None, LAYERNORM=layernorm, DROPOUT=dropout is not None,
                        DY_DROPOUT=output_dropout is not None, BLOCK_M=block_m, BLOCK_N=block_n)
    out = [dx.view(x.shape), sum_partials(pw, weight.dtype), sum_partials(pb, weight.dtype)]
    if dropout is not None:
        out.append(dxd.view(x.shape))
    return out
