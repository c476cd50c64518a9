"""attention in Triton: softmax(QKᵀ/√D + mask) V on [B, H, S, D], flash style.

Forward (`_attn_fwd`): one program per (query block, batch·head); an online softmax over key
blocks keeps the running max `m` and sum `l` per row, so no B×H×S×S buffer exists unless the
pre-softmax scores are asked for (then they are written as they are computed, masked keys at
finfo(dtype).min). Masked keys take finfo(float32).min rather than -inf, so a fully masked row is
uniform, as in the reference. Attention dropout (`ops/dropout.py`'s hash of the [B, H, S, S] element
index, stream 0) drops the probabilities after the normalizer is summed.

Backward (FlashAttention-2 style, recompute): the forward kernel again for O, m, l; `_attn_delta`
for rowsum(dO∘O); `_attn_bwd_dkdv` (one program per key block, looping over query blocks) and
`_attn_bwd_dq` (one per query block, looping over key blocks): every gradient written once by one
program, no atomics. A gradient arriving on the returned scores is added to dS at unmasked keys.
Head sizes: powers of two, 16–256. Every [B, H, S, D] operand is addressed through its (batch,
head, sequence) strides, so [B, S, H·D] projections are read and written in place, never transposed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mbkernels.triton import dropout as tdrop
from mbkernels.triton import interpreting
from mbkernels.triton.gemm import dot
from mbkernels.triton.rounding import cast

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
HEAD_SIZES = (16, 32, 64, 128, 256)
MASK_VALUE = torch.finfo(torch.float32).min


@triton.jit
def _head(T, st, b, h):
    """The [S, D] matrix of head h of batch b in a tensor of strides st = (batch, head, seq)."""
    return T + b * st[0] + h * st[1]


@triton.jit
def _attn_fwd(Q, K, V, MASK, O, MROW, LROW, SC, sq, sk, sv, so, H, S, sm_scale, mask_value, score_min,
              key, threshold, dscale,
              HAS_MASK: tl.constexpr, RETURN_SCORES: tl.constexpr, DROPOUT: tl.constexpr, FP32_DOT: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    Q = _head(Q, sq, b, h)
    K = _head(K, sk, b, h)
    V = _head(V, sv, b, h)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < S
    d = tl.arange(0, D)
    q = tl.load(Q + rows[:, None] * sq[2] + d[None, :], mask=rmask[:, None], other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, D], dtype=tl.float32)
    for n0 in range(0, S, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        cmask = cols < S
        kt = tl.load(K + cols[None, :] * sk[2] + d[:, None], mask=cmask[None, :], other=0.0)
        s = dot(q, kt, FP32_DOT) * sm_scale
        if HAS_MASK:
            km = tl.load(MASK + b * S + cols, mask=cmask, other=0) != 0
            s = tl.where(km[None, :], s, mask_value)
            if RETURN_SCORES:
                tl.store(SC + bh * S * S + rows[:, None] * S + cols[None, :],
                         cast(tl.where(km[None, :], s, score_min), SC.dtype.element_ty),
                         mask=rmask[:, None] & cmask[None, :])
        else:
            if RETURN_SCORES:
                tl.store(SC + bh * S * S + rows[:, None] * S + cols[None, :], cast(s, SC.dtype.element_ty),
                         mask=rmask[:, None] & cmask[None, :])
        s = tl.where(cmask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if DROPOUT:
            idx = (bh * S + rows[:, None]) * S + cols[None, :]
            p = tl.where(tdrop.keep(idx, key, threshold), p * dscale, 0.0)
        v = tl.load(V + cols[:, None] * sv[2] + d[None, :], mask=cmask[:, None], other=0.0)
        acc = acc * alpha[:, None] + dot(cast(p, v.dtype), v, FP32_DOT)
        m_i = m_new
    o = acc / l_i[:, None]
    tl.store(_head(O, so, b, h) + rows[:, None] * so[2] + d[None, :], cast(o, O.dtype.element_ty), mask=rmask[:, None])
    tl.store(MROW + bh * S + rows, m_i, mask=rmask)
    tl.store(LROW + bh * S + rows, l_i, mask=rmask)


@triton.jit
def _attn_delta(O, DO, DELTA, so, sdo, H, S, D: tl.constexpr, BLOCK: tl.constexpr):
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    rmask = rows < S
    d = tl.arange(0, D)[None, :]
    o = tl.load(_head(O, so, b, h) + rows[:, None] * so[2] + d, mask=rmask[:, None], other=0.0).to(tl.float32)
    do = tl.load(_head(DO, sdo, b, h) + rows[:, None] * sdo[2] + d, mask=rmask[:, None], other=0.0).to(tl.float32)
    tl.store(DELTA + bh * S + rows, tl.sum(o * do, axis=1), mask=rmask)


@triton.jit
def _probs_and_ds(q, kt, vt, do, m, l, delta, km, rows, cols, S, bh, DS, sm_scale, mask_value,
                  key, threshold, dscale,
                  HAS_MASK: tl.constexpr, HAS_DS: tl.constexpr, DROPOUT: tl.constexpr, FP32_DOT: tl.constexpr):
    """For a [BLOCK_M, BLOCK_N] tile: the (dropped) probabilities and dS, the gradient of the
    pre-softmax scores QKᵀ·scale (before the 1/√D of the chain rule is applied)."""
    rmask = rows < S
    cmask = cols < S
    valid = rmask[:, None] & cmask[None, :]
    s = dot(q, kt, FP32_DOT) * sm_scale
    if HAS_MASK:
        s = tl.where(km[None, :], s, mask_value)
    p = tl.where(valid, tl.exp(s - m[:, None]) / l[:, None], 0.0)
    dp = dot(do, vt, FP32_DOT)
    if DROPOUT:
        kept = valid & tdrop.keep((bh * S + rows[:, None]) * S + cols[None, :], key, threshold)
        pd = tl.where(kept, p * dscale, 0.0)
        dp = tl.where(kept, dp * dscale, 0.0)
    else:
        pd = p
    ds = p * (dp - delta[:, None])
    if HAS_DS:
        ds += tl.load(DS + bh * S * S + rows[:, None] * S + cols[None, :], mask=valid, other=0.0).to(tl.float32)
    if HAS_MASK:
        ds = tl.where(km[None, :], ds, 0.0)  # masked_fill passes no gradient to masked scores
    return pd, ds


@triton.jit
def _attn_bwd_dkdv(Q, K, V, MASK, DO, MROW, LROW, DELTA, DS, DK, DV, sq, sk, sv, sdo, sdk, sdv, H, S, sm_scale,
                   mask_value, key, threshold, dscale,
                   HAS_MASK: tl.constexpr, HAS_DS: tl.constexpr, DROPOUT: tl.constexpr, FP32_DOT: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr):
    pid_n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    Q = _head(Q, sq, b, h)
    DO = _head(DO, sdo, b, h)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < S
    d = tl.arange(0, D)
    k = tl.load(_head(K, sk, b, h) + cols[:, None] * sk[2] + d[None, :], mask=cmask[:, None], other=0.0)
    v = tl.load(_head(V, sv, b, h) + cols[:, None] * sv[2] + d[None, :], mask=cmask[:, None], other=0.0)
    kt = tl.trans(k)
    vt = tl.trans(v)
    if HAS_MASK:
        km = tl.load(MASK + b * S + cols, mask=cmask, other=0) != 0
    else:
        km = cmask
    dk = tl.zeros([BLOCK_N, D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, D], dtype=tl.float32)
    for m0 in range(0, S, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        rmask = rows < S
        q = tl.load(Q + rows[:, None] * sq[2] + d[None, :], mask=rmask[:, None], other=0.0)
        do = tl.load(DO + rows[:, None] * sdo[2] + d[None, :], mask=rmask[:, None], other=0.0)
        m = tl.load(MROW + bh * S + rows, mask=rmask, other=0.0)
        l = tl.load(LROW + bh * S + rows, mask=rmask, other=1.0)
        delta = tl.load(DELTA + bh * S + rows, mask=rmask, other=0.0)
        pd, ds = _probs_and_ds(q, kt, vt, do, m, l, delta, km, rows, cols, S, bh, DS, sm_scale, mask_value,
                               key, threshold, dscale, HAS_MASK, HAS_DS, DROPOUT, FP32_DOT)
        dv += dot(cast(tl.trans(pd), do.dtype), do, FP32_DOT)
        dk += dot(cast(tl.trans(ds), q.dtype), q, FP32_DOT)
    tl.store(_head(DK, sdk, b, h) + cols[:, None] * sdk[2] + d[None, :], cast(dk * sm_scale, DK.dtype.element_ty),
             mask=cmask[:, None])
    tl.store(_head(DV, sdv, b, h) + cols[:, None] * sdv[2] + d[None, :], cast(dv, DV.dtype.element_ty),
             mask=cmask[:, None])


@triton.jit
def _attn_bwd_dq(Q, K, V, MASK, DO, MROW, LROW, DELTA, DS, DQ, sq, sk, sv, sdo, sdq, H, S, sm_scale, mask_value,
                 key, threshold, dscale,
                 HAS_MASK: tl.constexpr, HAS_DS: tl.constexpr, DROPOUT: tl.constexpr, FP32_DOT: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    K = _head(K, sk, b, h)
    V = _head(V, sv, b, h)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < S
    d = tl.arange(0, D)
    q = tl.load(_head(Q, sq, b, h) + rows[:, None] * sq[2] + d[None, :], mask=rmask[:, None], other=0.0)
    do = tl.load(_head(DO, sdo, b, h) + rows[:, None] * sdo[2] + d[None, :], mask=rmask[:, None], other=0.0)
    m = tl.load(MROW + bh * S + rows, mask=rmask, other=0.0)
    l = tl.load(LROW + bh * S + rows, mask=rmask, other=1.0)
    delta = tl.load(DELTA + bh * S + rows, mask=rmask, other=0.0)
    dq = tl.zeros([BLOCK_M, D], dtype=tl.float32)
    for n0 in range(0, S, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        cmask = cols < S
        kt = tl.load(K + cols[None, :] * sk[2] + d[:, None], mask=cmask[None, :], other=0.0)
        vt = tl.load(V + cols[None, :] * sv[2] + d[:, None], mask=cmask[None, :], other=0.0)
        if HAS_MASK:
            km = tl.load(MASK + b * S + cols, mask=cmask, other=0) != 0
        else:
            km = cmask
        _, ds = _probs_and_ds(q, kt, vt, do, m, l, delta, km, rows, cols, S, bh, DS, sm_scale, mask_value,
                              key, threshold, dscale, HAS_MASK, HAS_DS, DROPOUT, FP32_DOT)
        dq += dot(cast(ds, q.dtype), tl.trans(kt), FP32_DOT)
    tl.store(_head(DQ, sdq, b, h) + rows[:, None] * sdq[2] + d[None, :], cast(dq * sm_scale, DQ.dtype.element_ty),
             mask=rmask[:, None])


def supported(q, k, v) -> bool:
    return (q.dtype in DTYPES and k.dtype == q.dtype and v.dtype == q.dtype and q.dim() == 4
            and q.shape == k.shape == v.shape and q.shape[-1] in HEAD_SIZES and q.shape[2] > 0)


def _blocks(d: int, backward: bool = False) -> tuple[int, int]:
    if interpreting():
        return 32, 32  # few, large programs: the interpreter pays per program and per loop trip
    if d <= 64:
        return (64, 64) if not backward else (64, 32)
    return (64, 32) if d <= 128 and not backward else (32, 32)


def _mask_arg(key_mask, like):
    return key_mask.to(torch.int32).contiguous() if key_mask is not None else like


def _unit_last(t: torch.Tensor) -> torch.Tensor:
    """t with unit stride along the head dimension (the kernels read rows of D contiguous values)."""
    return t if t.stride(3) == 1 else t.contiguous()


def _st(t: torch.Tensor) -> tuple[int, int, int]:
    """(batch, head, seq) strides of a [B, H, S, D] tensor: any layout with unit stride along D, e.g.
    [B, S, H·D] projections viewed as heads, which the kernels read and write in place."""
    return t.stride(0), t.stride(1), t.stride(2)


def forward_with_stats(q, k, v, key_mask, dropout_p, seed, return_scores, out=None):
    """(context, scores or empty, row maxima, row sums): the forward and what its backward reuses."""
    b, h, s, d = q.shape
    q, k, v = _unit_last(q), _unit_last(k), _unit_last(v)
    o = out if out is not None else torch.empty_like(q, memory_format=torch.contiguous_format)
    mrow = torch.empty((b, h, s), dtype=torch.float32, device=q.device)
    lrow = torch.empty((b, h, s), dtype=torch.float32, device=q.device)
    scores = q.new_empty((b, h, s, s)) if return_scores else q.new_empty(0)
    drop = dropout_p > 0
    key, threshold, dscale = tdrop.dropout_params(dropout_p, seed, 0) if drop else (0, 0, 1.0)
    block_m, block_n = _blocks(d)
    _attn_fwd[(triton.cdiv(s, block_m), b * h)](
        q, k, v, _mask_arg(key_mask, q), o, mrow, lrow, scores if return_scores else o,
        _st(q), _st(k), _st(v), _st(o), h, s, d ** -0.5, MASK_VALUE, torch.finfo(q.dtype).min, key, threshold, dscale,
        HAS_MASK=key_mask is not None, RETURN_SCORES=return_scores, DROPOUT=drop,
        FP32_DOT=q.dtype == torch.float32 or interpreting(), BLOCK_M=block_m, BLOCK_N=block_n, D=d,
        num_warps=8 if q.dtype == torch.float32 else 4)  # fp32's FMA dot spills in 4 warps on sm_90
    return o, scores, mrow, lrow


def attention_forward(q, k, v, key_mask, dropout_p: float, seed, return_scores: bool, out=None):
    """(context [B, H, S, D], pre-softmax masked scores [B, H, S, S] or an empty tensor).

    q, k, v and `out` (where the context is written; default a new contiguous tensor) may be any
    [B, H, S, D] views with unit stride along D."""
    o, scores, _, _ = forward_with_stats(q, k, v, key_mask, dropout_p, seed, return_scores, out)
    return o, scores


def attention_backward(do, dscores, q, k, v, key_mask, dropout_p: float, seed, out=None, saved=None):
    """(dq, dk, dv); `dscores` is the gradient of the returned scores, or None. `out`: three
    [B, H, S, D] views to write dq, dk, dv into (default new contiguous tensors). `saved`: the
    forward's (context, row maxima, row sums) when the caller has them (else recomputed)."""
    b, h, s, d = q.shape
    q, k, v, do = _unit_last(q), _unit_last(k), _unit_last(v), _unit_last(do)
    if saved is None:  # the context in fp32: rowsum(dO∘O) cancels against dP, a rounded O would show
        o32 = torch.empty((b, h, s, d), dtype=torch.float32, device=q.device)
        o, _, mrow, lrow = forward_with_stats(q, k, v, key_mask, dropout_p, seed, False, out=o32)
    else:
        o, mrow, lrow = saved
    delta = torch.empty((b, h, s), dtype=torch.float32, device=q.device)
    _attn_delta[(triton.cdiv(s, 32), b * h)](o, do, delta, _st(o), _st(do), h, s, D=d, BLOCK=32)
    drop = dropout_p > 0
    key, threshold, dscale = tdrop.dropout_params(dropout_p, seed, 0) if drop else (0, 0, 1.0)
    dq, dk, dv = out if out is not None else (torch.empty_like(t, memory_format=torch.contiguous_format)
                                              for t in (q, k, v))
    ds = dscores.contiguous() if dscores is not None else q
    common = {"HAS_MASK": key_mask is not None, "HAS_DS": dscores is not None, "DROPOUT": drop,
              "FP32_DOT": q.dtype == torch.float32 or interpreting(), "D": d}
    block_m, block_n = _blocks(d, backward=True)
    mask = _mask_arg(key_mask, q)
    _attn_bwd_dkdv[(triton.cdiv(s, block_n), b * h)](
        q, k, v, mask, do, mrow, lrow, delta, ds, dk, dv, _st(q), _st(k), _st(v), _st(do), _st(dk), _st(dv),
        h, s, d ** -0.5, MASK_VALUE, key, threshold, dscale, BLOCK_M=block_m, BLOCK_N=block_n, **common)
    _attn_bwd_dq[(triton.cdiv(s, block_m), b * h)](
        q, k, v, mask, do, mrow, lrow, delta, ds, dq, _st(q), _st(k), _st(v), _st(do), _st(dq),
        h, s, d ** -0.5, MASK_VALUE, key, threshold, dscale, BLOCK_M=block_m, BLOCK_N=block_n, **common)
    return dq, dk, dv
