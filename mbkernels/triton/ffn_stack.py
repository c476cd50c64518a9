"""ffn_stack in Triton: for each FFN i, `x = N_i(act(x W1ᵢᵀ + b1ᵢ) W2ᵢᵀ + b2ᵢ + x)`, all FFNs in one kernel.

Forward (`_ffn_stack_fwd`): one program per block of BLOCK_M rows keeps its [BLOCK_M, width] row
tile in registers through every FFN. The 512-wide intermediate never leaves the chip — it is not
even whole at once: for each BLOCK_I slice of it the program computes `act(x W1ᵀ + b1)` for the
slice and immediately accumulates its product with the matching slice of W2 into the [BLOCK_M,
width] output. Bias, dropout (last FFN), residual and the norm run on that tile before the next FFN
starts; only the final rows are stored (and, for the backward, each FFN's input rows).
Weights are read stacked ([F, inter, width] and [F, width, inter]).

Wider rows (the IB-BERT teacher's one FFN of 1024 → 4096 → 1024) do not fit that register tile:
up to the norm kernel's 8192 each FFN then is a Triton GEMM with bias and activation in its
epilogue followed by `linear_norm` (second Linear, dropout, residual, norm; column tiles and a
norm pass at that width), the intermediate stored once; the backward below is the same for both.

Backward (recompute, nothing saved by the forward but the op's inputs): the fused forward again,
storing each FFN's input x_i ([F, M, width]); then, FFN by FFN from the last, the intermediate
`h = x_i W1ᵀ + b1` and `act(h)` of that one FFN (one Triton GEMM, both stored), `linear_norm`'s
Triton backward through the second Linear, residual and norm (its dX epilogue multiplies by
act'(h)), and the first Linear's dW / dbias and dX (+ the residual's gradient, fused as an add).

Memory: autograd through the reference keeps, per FFN and row, the intermediate before and after
the activation (2 × inter) plus the pre-norm sum and the input (2 × width): for MobileBERT's four
FFNs that is 4 × (2·512 + 2·128) = 5,120 values per token per layer (84 MB per layer in fp32 at 32
× 128 tokens, 2 GB over 24 layers). This op stores only its input (128 per token); its backward
holds F·width + 2·inter values per token (1,536) for one layer at a time.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from mbkernels.triton import dropout as tdrop
from mbkernels.triton import gemm
from mbkernels.triton import interpreting
from mbkernels.triton import linear_norm as tlin
from mbkernels.triton import nonorm as tnorm
from mbkernels.triton.rounding import cast

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_WIDTH = 256  # the fused kernel's row tile lives in registers; wider stacks compose GEMMs


@triton.jit
def _ffn_stack_fwd(X, W1, B1, W2, B2, NW, NB, EPS, Y, XS, M, WIDTH, INTER, F, key, threshold, scale,
                   ACT: tl.constexpr, LAYERNORM: tl.constexpr, DROPOUT: tl.constexpr, STORE_INPUTS: tl.constexpr,
                   FP32_DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_I: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_W)
    rmask = rows < M
    cmask = cols < WIDTH
    mask = rmask[:, None] & cmask[None, :]
    offs = rows.to(tl.int64)[:, None] * WIDTH + cols[None, :]
    x = tl.load(X + offs, mask=mask, other=0.0)
    for f in range(F):
        if STORE_INPUTS:
            tl.store(XS + f * M * WIDTH + offs, x, mask=mask)
        w1_base = W1 + f * INTER * WIDTH
        w2_base = W2 + f * WIDTH * INTER
        acc = tl.zeros([BLOCK_M, BLOCK_W], dtype=tl.float32)
        for i0 in range(0, INTER, BLOCK_I):
            inter = i0 + tl.arange(0, BLOCK_I)
            imask = inter < INTER
            w1t = tl.load(w1_base + inter[None, :] * WIDTH + cols[:, None], mask=cmask[:, None] & imask[None, :],
                          other=0.0)
            h = gemm.dot(x, w1t, FP32_DOT)
            h += tl.load(B1 + f * INTER + inter, mask=imask, other=0.0).to(tl.float32)[None, :]
            h = cast(gemm.act_fn(h, ACT), x.dtype)  # rounded as the unfused op chain rounds it
            w2t = tl.load(w2_base + cols[None, :] * INTER + inter[:, None], mask=imask[:, None] & cmask[None, :],
                          other=0.0)
            acc += gemm.dot(h, w2t, FP32_DOT)
        acc += tl.load(B2 + f * WIDTH + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
        if DROPOUT:
            if f == F - 1:
                acc = tl.where(tdrop.keep(offs, key, threshold), acc * scale, 0.0)
        acc += x.to(tl.float32)
        acc = tnorm.norm_rows(acc, mask, cols, cmask, NW + f * WIDTH, NB + f * WIDTH, WIDTH, tl.load(EPS + f),
                              LAYERNORM)
        x = cast(tl.where(mask, acc, 0.0), x.dtype)
    tl.store(Y + offs, x, mask=mask)


def supported(x, intermediate_weights, act: str, norm: str) -> bool:
    if not intermediate_weights or x.dtype not in DTYPES or act not in ("relu", "gelu"):
        return False
    inter, width = intermediate_weights[0].shape
    return (norm in ("nonorm", "layernorm") and 0 < x.shape[-1] == width <= tnorm.MAX_N
            and all(w.dtype == x.dtype and w.shape == (inter, width) for w in intermediate_weights))


def _blocks(width: int, inter: int, dtype: torch.dtype) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_W, BLOCK_I, warps). On sm_90 at width 128 these compile without register
    spills (cuobjdump -res-usage): bf16/fp16 64×64 in 8 warps; fp32's IEEE dot (FMA, no tensor
    cores) needs half the rows and slice."""
    block_w = max(16, triton.next_power_of_2(width))
    if interpreting():  # few, large programs: the interpreter pays per program and per loop trip
        return 64, block_w, max(16, min(256, triton.next_power_of_2(inter))), 4
    if dtype == torch.float32 or block_w > 128:
        return 32, block_w, 32, 8
    return 64, block_w, 64, 8


@functools.lru_cache(maxsize=64)
def _eps_tensor(eps: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """The per-FFN eps as a device tensor, made once per (values, device): a fresh one per call
    would be a host-to-device copy on every layer of every step."""
    return torch.tensor(eps, dtype=torch.float32, device=device)


def _composed(x, w1, b1, w2, b2, nw, nb, act, norm, eps, dropout_p, seed, inputs_only):
    """(y, each FFN's input rows) for rows wider than MAX_WIDTH: per FFN, `act(x W1ᵀ + b1)` from
    the shared GEMM, then `linear_norm` with x as the residual (the dropout of the last FFN is that
    op's stream 0, the mask the fused kernel draws). `inputs_only` (the backward): y is None, the
    last FFN is not run."""
    width = x.shape[-1]
    xi = tlin.rows_of(x, width)
    xs = []
    for i in range(len(w1)):
        xs.append(xi)
        if inputs_only and i == len(w1) - 1:
            return None, xs
        hidden = gemm.matmul(xi, w1[i].t(), bias=b1[i], act=act)
        p = dropout_p if i == len(w1) - 1 else 0.0
        xi = tlin.linear_norm_forward(hidden, w2[i], b2[i], nw[i], nb[i], xi, norm, eps[i], p, seed)
    return xi.view(x.shape), xs


def _run(x, w1, b1, w2, b2, nw, nb, act, norm, eps, dropout_p, seed, store_inputs):
    width = x.shape[-1]
    if width > MAX_WIDTH:
        return _composed(x, w1, b1, w2, b2, nw, nb, act, norm, eps, dropout_p, seed, store_inputs)
    inter = w1[0].shape[0]
    x2 = x.reshape(-1, width).contiguous()
    m, f = x2.shape[0], len(w1)
    y = torch.empty_like(x2)
    xs = torch.empty((f, m, width), dtype=x.dtype, device=x.device) if store_inputs else y
    drop = dropout_p > 0
    key, threshold, scale = tdrop.dropout_params(dropout_p, seed, 0) if drop else (0, 0, 1.0)
    block_m, block_w, block_i, warps = _blocks(width, inter, x.dtype)
    if m:
        _ffn_stack_fwd[(triton.cdiv(m, block_m),)](
            x2, torch.stack(w1), torch.stack(b1), torch.stack(w2), torch.stack(b2), torch.stack(nw),
            torch.stack(nb), _eps_tensor(tuple(eps), x.device), y, xs,
            m, width, inter, f, key, threshold, scale,
            ACT=gemm.ACTS[act], LAYERNORM=norm == "layernorm", DROPOUT=drop, STORE_INPUTS=store_inputs,
            FP32_DOT=x.dtype == torch.float32 or interpreting(),
            BLOCK_M=block_m, BLOCK_W=block_w, BLOCK_I=block_i, num_warps=warps)
    return y.view(x.shape), xs


def ffn_stack_forward(x, w1, b1, w2, b2, nw, nb, act: str, norm: str, eps, dropout_p: float, seed):
    return _run(x, w1, b1, w2, b2, nw, nb, act, norm, eps, dropout_p, seed, False)[0]


def ffn_stack_backward(dy, x, w1, b1, w2, b2, nw, nb, act: str, norm: str, eps, dropout_p: float, seed):
    """Gradients in argument order: dx, then the lists dW1, db1, dW2, db2, dnorm_weight, dnorm_bias."""
    width = x.shape[-1]
    f = len(w1)
    _, xs = _run(x, w1, b1, w2, b2, nw, nb, act, norm, eps, dropout_p, seed, True)
    grads = {k: [None] * f for k in ("w1", "b1", "w2", "b2", "nw", "nb")}
    dxi = dy.reshape(-1, width)
    for i in reversed(range(f)):
        xi = xs[i]
        pre = torch.empty((xi.shape[0], w1[i].shape[0]), dtype=x.dtype, device=x.device)
        hidden = gemm.matmul(xi, w1[i].t(), bias=b1[i], act=act, pre=pre)
        p = dropout_p if i == f - 1 else 0.0
        dpre, grads["w2"][i], grads["b2"][i], grads["nw"][i], grads["nb"][i], dres = tlin.linear_norm_backward(
            dxi, hidden, w2[i], b2[i], nw[i], nb[i], xi, norm, eps[i], p, seed, act_grad_at=pre, act=act)
        grads["w1"][i], grads["b1"][i] = gemm.weight_grad(dpre, xi, w1[i].dtype, True)
        dxi = gemm.matmul(dpre, w1[i], x.dtype, add=tlin.rows_of(dres, width))
    return [dxi.view(x.shape), grads["w1"], grads["b1"], grads["w2"], grads["b2"], grads["nw"], grads["nb"]]

