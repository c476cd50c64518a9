"""embedding in Triton: lookup → trigram [next, cur, prev] → Linear → + position + type → norm → dropout.

Forward (`_embedding_fwd`): one program per block of BLOCK_M tokens and the whole output row
(N ≤ 512). The GEMM's A operand is gathered as it is loaded: column k of the trigram row of token
(b, s) is column k mod E of the word embedding of token (b, s + 1 − k // E) — zero past the
sequence ends — so neither the [M, E] lookup nor the [M, 3E] concatenation is ever stored. The
epilogue adds the bias and the gathered position and token-type rows, normalizes, and applies
dropout (stream 0, after the norm as in the reference). Without a transformation (the trigram or
lookup width is the hidden width) the gathered row itself is the tile.

Backward: the forward again without norm and dropout gives the pre-norm rows; `nonorm._norm_bwd`
masks dY by the dropout and gives dZ, dgamma, dbeta; the transformation's dW / dbias and dX are the
shared Triton GEMM over the gathered trigram rows (`_embedding_gather`, [M, 3E], transient). The
table gradients (word, position, token type) are scatter-adds, done by ATen's `index_put_` with
accumulate (sort-based on CUDA: deterministic, no float atomics); `padding_idx`'s row gets none.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mbkernels.triton import dropout as tdrop
from mbkernels.triton import gemm
from mbkernels.triton import interpreting
from mbkernels.triton import linear_norm as tlin
from mbkernels.triton import nonorm as tnorm
from mbkernels.triton.rounding import cast

DTYPES = tlin.DTYPES
MAX_N = tlin.MAX_N
_SHIFTS = (1, 0, -1)  # the trigram's segments: next token, the token, previous token


@triton.jit
def _gather(IDS, EMB, rows, ks, rmask, kmask, S, E, HAS_IDS: tl.constexpr, TRIGRAM: tl.constexpr):
    """[BLOCK_M, BLOCK_K] of the (trigram) lookup rows of tokens `rows`, columns `ks`."""
    if TRIGRAM:
        seg = ks // E
        col = ks - seg * E
        shift = 1 - seg
    else:
        col = ks
        shift = ks * 0
    src_s = (rows % S)[:, None] + shift[None, :]
    valid = rmask[:, None] & kmask[None, :] & (src_s >= 0) & (src_s < S)
    src = rows.to(tl.int64)[:, None] + shift[None, :]
    if HAS_IDS:
        tok = tl.load(IDS + src, mask=valid, other=0).to(tl.int64)
        return tl.load(EMB + tok * E + col[None, :], mask=valid, other=0.0)
    else:
        return tl.load(EMB + src * E + col[None, :], mask=valid, other=0.0)


@triton.jit
def _embedding_fwd(IDS, EMB, TYPES, POS, WT, BT, PE, TE, NW, NB, Y, M, S, E, K, N, eps, key, threshold, scale,
                   HAS_IDS: tl.constexpr, TRIGRAM: tl.constexpr, HAS_WT: tl.constexpr, NORM: tl.constexpr,
                   DROPOUT: tl.constexpr, FP32_DOT: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    rmask = rows < M
    cmask = cols < N
    mask = rmask[:, None] & cmask[None, :]
    rows64 = rows.to(tl.int64)
    if HAS_WT:
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            kmask = ks < K
            x = _gather(IDS, EMB, rows, ks, rmask, kmask, S, E, HAS_IDS, TRIGRAM)
            w = tl.load(WT + cols[None, :].to(tl.int64) * K + ks[:, None], mask=kmask[:, None] & cmask[None, :],
                        other=0.0)
            acc += gemm.dot(x, w, FP32_DOT)
        acc += tl.load(BT + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    else:
        acc = _gather(IDS, EMB, rows, cols, rmask, cmask, S, E, HAS_IDS, TRIGRAM).to(tl.float32)
    pos = tl.load(POS + rows, mask=rmask, other=0).to(tl.int64)
    typ = tl.load(TYPES + rows, mask=rmask, other=0).to(tl.int64)
    acc += tl.load(PE + pos[:, None] * N + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    acc += tl.load(TE + typ[:, None] * N + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if NORM != 0:
        acc = tnorm.norm_rows(acc, mask, cols, cmask, NW, NB, N, eps, NORM == 2)
    offs = rows64[:, None] * N + cols[None, :]
    if DROPOUT:
        acc = tl.where(tdrop.keep(offs, key, threshold), acc * scale, 0.0)
    tl.store(Y + offs, cast(acc, Y.dtype.element_ty), mask=mask)


@triton.jit
def _embedding_gather(IDS, EMB, X, M, S, E, K, HAS_IDS: tl.constexpr, TRIGRAM: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    ks = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    rmask = rows < M
    kmask = ks < K
    x = _gather(IDS, EMB, rows, ks, rmask, kmask, S, E, HAS_IDS, TRIGRAM)
    tl.store(X + rows.to(tl.int64)[:, None] * K + ks[None, :], x, mask=rmask[:, None] & kmask[None, :])


def supported(inputs_embeds, word_embeddings, transformation_weight, position_embeddings, norm: str,
              trigram: bool) -> bool:
    table = inputs_embeds if inputs_embeds is not None else word_embeddings
    n = position_embeddings.shape[1]
    k = table.shape[-1] * (3 if trigram else 1)
    shapes_ok = (transformation_weight.shape == (n, k) if transformation_weight is not None else k == n)
    dtypes = {t.dtype for t in (table, word_embeddings, position_embeddings) if t is not None}
    if transformation_weight is not None:
        dtypes.add(transformation_weight.dtype)
    return (norm in ("nonorm", "layernorm") and len(dtypes) == 1 and table.dtype in DTYPES and 0 < n <= MAX_N
            and shapes_ok)


def _blocks(n: int) -> tuple[int, int, int]:
    block_m, block_n, block_k = tlin._blocks(n)
    return block_m, block_n, (64 if interpreting() else block_k)


def _launch(ids, embeds, types, pos, table, wt, bt, pe, te, nw, nb, trigram, norm, eps, dropout_p, seed):
    b, s = types.shape
    m = b * s
    e = table.shape[-1]
    n = pe.shape[1]
    k = e * (3 if trigram else 1)
    src = embeds.reshape(m, e).contiguous() if embeds is not None else table.contiguous()
    y = torch.empty((m, n), dtype=table.dtype, device=table.device)
    drop = dropout_p > 0
    key, threshold, scale = tdrop.dropout_params(dropout_p, seed, 0) if drop else (0, 0, 1.0)
    block_m, block_n, block_k = _blocks(n)
    if m:
        _embedding_fwd[(triton.cdiv(m, block_m),)](
            ids.reshape(m).contiguous() if ids is not None else y, src, types.reshape(m).contiguous(),
            pos.reshape(m).contiguous(), wt.contiguous() if wt is not None else y,
            bt.contiguous() if bt is not None else y, pe.contiguous(), te.contiguous(),
            nw.contiguous() if norm != "none" else y, nb.contiguous() if norm != "none" else y, y,
            m, s, e, k, n, eps, key, threshold, scale,
            HAS_IDS=ids is not None, TRIGRAM=trigram, HAS_WT=wt is not None, NORM=tlin.NORMS[norm], DROPOUT=drop,
            FP32_DOT=table.dtype == torch.float32 or interpreting(),
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=tlin.warps(block_m, block_n))
    return y.view(b, s, n)


def embedding_forward(ids, embeds, types, pos, table, wt, bt, pe, te, nw, nb, padding_idx, trigram: bool, norm: str,
                      eps: float, dropout_p: float, seed):
    """[B, S, hidden]; `padding_idx` only matters to the backward."""
    return _launch(ids, embeds, types, pos, table if embeds is None else embeds, wt, bt, pe, te, nw, nb, trigram,
                   norm, eps, dropout_p, seed)


def _gathered(ids, embeds, table, b, s, trigram):
    m, e = b * s, table.shape[-1]
    k = e * (3 if trigram else 1)
    x = torch.empty((m, k), dtype=table.dtype, device=table.device)
    src = embeds.reshape(m, e).contiguous() if embeds is not None else table.contiguous()
    block_m, block_k = 32, min(128, triton.next_power_of_2(k))
    _embedding_gather[(triton.cdiv(m, block_m), triton.cdiv(k, block_k))](
        ids.reshape(m).contiguous() if ids is not None else x, src, x, m, s, e, k,
        HAS_IDS=ids is not None, TRIGRAM=trigram, BLOCK_M=block_m, BLOCK_K=block_k)
    return x


def _scatter_rows(rows: int, width: int, index: torch.Tensor, values: torch.Tensor, dtype) -> torch.Tensor:
    """Σ of `values` rows into `rows` rows by `index` (deterministic: index_put_ accumulates by sort)."""
    out = torch.zeros((rows, width), dtype=torch.float32, device=values.device)
    out.index_put_((index,), values.float(), accumulate=True)
    return out.to(dtype)


def embedding_backward(dy, ids, embeds, types, pos, table, wt, bt, pe, te, nw, nb, padding_idx, trigram: bool,
                       norm: str, eps: float, dropout_p: float, seed):
    """Gradients (d inputs_embeds, d word_embeddings, d transformation weight, d bias, d position
    table, d type table, d norm weight, d norm bias), None where an input is absent or unused."""
    b, s = types.shape
    m = b * s
    src_table = table if embeds is None else embeds
    e, n = src_table.shape[-1], pe.shape[1]
    z = _launch(ids, embeds, types, pos, src_table, wt, bt, pe, te, None, None, trigram, "none", 0.0, 0.0, None)
    drop = (dropout_p, seed, 0) if dropout_p > 0 else None
    dz, dnw, dnb = tnorm.norm_backward(dy, z, nw, None, norm == "layernorm", eps, output_dropout=drop)
    dz = dz.reshape(m, n)
    dpe = _scatter_rows(pe.shape[0], n, pos.reshape(m), dz, pe.dtype)
    dte = _scatter_rows(te.shape[0], n, types.reshape(m), dz, te.dtype)
    dwt = dbt = None
    if wt is not None:
        x = _gathered(ids, embeds, src_table, b, s, trigram)
        dwt, dbt = gemm.weight_grad(dz, x, wt.dtype, bt is not None)
        dx = gemm.matmul(dz, wt, src_table.dtype)
    else:
        dx = dz
    # Segment j of token (b, s) came from token (b, s + shift_j): send it there.
    shifts = _SHIFTS if trigram else (0,)
    tok = torch.arange(m, device=dy.device)
    seq = tok % s
    targets, values = [], []
    for j, shift in enumerate(shifts):
        valid = (seq + shift >= 0) & (seq + shift < s)
        targets.append((tok + shift)[valid])
        values.append(dx[valid, j * e:(j + 1) * e])
    target, value = torch.cat(targets), torch.cat(values)
    if embeds is not None:
        return _scatter_rows(m, e, target, value, embeds.dtype).view(embeds.shape), None, dwt, dbt, dpe, dte, dnw, dnb
    token = ids.reshape(m)[target]
    if padding_idx is not None:
        value = value.masked_fill((token == padding_idx % table.shape[0])[:, None], 0.0)
    return None, _scatter_rows(table.shape[0], e, token, value, table.dtype), dwt, dbt, dpe, dte, dnw, dnb
