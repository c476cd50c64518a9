"""The GEMM the Triton ops share: `C = A @ B` with strided operands and a fused epilogue.

A is [M, K] and B is [K, N], each given by a pointer and two strides, so the gradient GEMMs read
their transposes in place (dW = dYᵀ X with dYᵀ as strides (1, N); dX = dY W with W as stored).
One program computes a [BLOCK_M, BLOCK_N] fp32 tile over a range of K; the epilogue adds a bias,
applies ReLU/GELU (optionally also storing the pre-activation), multiplies by the activation's
derivative at a given pre-activation (the FFN backward), or adds a tensor (a residual gradient).

Long reductions (a weight gradient sums over every token: K = B·S) are split over `splits`
programs, each writing an fp32 partial tile; a second fixed-order pass sums them: no atomics, the
same bits on every run. `row_sums` also returns A's row sums from the same pass (dbias = Σ_rows dY,
computed by the programs of the first column block while they stream dYᵀ anyway).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mbkernels.triton import interpreting
from mbkernels.triton import nonorm as tnorm
from mbkernels.triton.rounding import cast

ACTS = {None: 0, "relu": 1, "gelu": 2}


@triton.jit
def gelu(x):
    return 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))


@triton.jit
def act_fn(x, ACT: tl.constexpr):
    if ACT == 1:  # NaN stays NaN, as in torch (a GPU's max.f32 would return the 0)
        return tl.maximum(x, 0.0, propagate_nan=tl.PropagateNan.ALL)
    elif ACT == 2:
        return gelu(x)
    else:
        return x


@triton.jit
def act_grad(x, ACT: tl.constexpr):
    """d act / dx at the pre-activation x (ReLU: 1 where x > 0, as torch's threshold_backward)."""
    if ACT == 1:
        return tl.where(x > 0.0, 1.0, 0.0)
    else:
        cdf = 0.5 * (1.0 + tl.erf(x * 0.7071067811865476))
        return cdf + x * tl.exp(-0.5 * x * x) * 0.3989422804014327


@triton.jit
def dot(a, b, FP32_DOT: tl.constexpr):
    if FP32_DOT:  # fp32 accuracy (and the interpreter, whose bf16 dot is wrong)
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b)


@triton.jit
def _gemm(A, B, C, BIAS, AUX, PRE, P, RS, M, N, K, k_per_split,
          sam, sak, sbk, sbn, scm, sxm,
          HAS_BIAS: tl.constexpr, ACT: tl.constexpr, STORE_PRE: tl.constexpr, ACT_GRAD: tl.constexpr,
          ADD: tl.constexpr, SPLIT: tl.constexpr, ROW_SUMS: tl.constexpr, FP32_DOT: tl.constexpr,
          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    split = tl.program_id(2)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < M
    cmask = cols < N
    rows64 = rows.to(tl.int64)
    cols64 = cols.to(tl.int64)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    rsum = tl.zeros([BLOCK_M], dtype=tl.float32)
    k_start = split * k_per_split
    k_end = tl.minimum(k_start + k_per_split, K)
    for k0 in range(k_start, k_end, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        kmask = ks < k_end
        a = tl.load(A + rows64[:, None] * sam + ks[None, :].to(tl.int64) * sak,
                    mask=rmask[:, None] & kmask[None, :], other=0.0)
        b = tl.load(B + ks[:, None].to(tl.int64) * sbk + cols64[None, :] * sbn,
                    mask=kmask[:, None] & cmask[None, :], other=0.0)
        acc += dot(a, b, FP32_DOT)
        if ROW_SUMS:
            rsum += tl.sum(a.to(tl.float32), axis=1)
    mask = rmask[:, None] & cmask[None, :]
    if ROW_SUMS:
        if pid_n == 0:
            tl.store(RS + split * M + rows, rsum, mask=rmask)
    if SPLIT:
        tl.store(P + split * M * N + rows64[:, None] * N + cols64[None, :], acc, mask=mask)
    else:
        if HAS_BIAS:
            acc += tl.load(BIAS + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
        offs = rows64[:, None] * sxm + cols64[None, :]
        if ACT_GRAD != 0:
            acc *= act_grad(tl.load(AUX + offs, mask=mask, other=0.0).to(tl.float32), ACT_GRAD)
        if STORE_PRE:
            tl.store(PRE + offs, cast(acc, PRE.dtype.element_ty), mask=mask)
        acc = act_fn(acc, ACT)
        if ADD:
            acc += tl.load(AUX + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(C + rows64[:, None] * scm + cols64[None, :], cast(acc, C.dtype.element_ty), mask=mask)


def _fp32_dot(a: torch.Tensor) -> bool:
    return a.dtype == torch.float32 or interpreting()


def _blocks(m: int, n: int) -> tuple[int, int, int]:
    if interpreting():  # few, large programs: the interpreter pays per program and per loop trip
        return (max(16, min(64, triton.next_power_of_2(m))), max(16, min(128, triton.next_power_of_2(n))), 64)
    return 64, 64, 32


def _splits(tiles: int, k: int, device: torch.device) -> int:
    """How many programs share a reduction: enough tiles to fill the GPU, but ≥ 256 of K each."""
    if device.type != "cuda" or k < 512:
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(k // 256, triton.cdiv(2 * sms, max(tiles, 1)), 32))


def matmul(a: torch.Tensor, b: torch.Tensor, out_dtype: torch.dtype | None = None, bias=None,
           act: str | None = None, pre: torch.Tensor | None = None, act_grad_at: torch.Tensor | None = None,
           act_grad: str | None = None, add: torch.Tensor | None = None, row_sums: bool = False,
           splits: int | None = None):
    """`epilogue(a @ b)` for 2-D `a` [M, K] and `b` [K, N] of any strides (a transposed view costs
    nothing). Epilogue, in order: + bias[N]; × act_grad'(act_grad_at); store the value into `pre`;
    act; + add. Returns C (contiguous [M, N]), and with `row_sums` also a's row sums in fp32.
    `splits` overrides how many programs share the K loop (by default: enough to fill the GPU)."""
    m, k = a.shape
    n = b.shape[1]
    out_dtype = out_dtype or a.dtype
    c = torch.empty((m, n), dtype=out_dtype, device=a.device)
    assert act_grad_at is None or add is None, "one auxiliary input per GEMM"
    aux = act_grad_at if act_grad_at is not None else add
    if aux is not None:
        assert aux.shape == (m, n) and (pre is None or pre.stride() == aux.stride()) and aux.stride(1) == 1
    if pre is not None:
        assert pre.shape == (m, n) and pre.stride(1) == 1
    sxm = (aux if aux is not None else pre if pre is not None else c).stride(0)
    block_m, block_n, block_k = _blocks(m, n)
    tiles = triton.cdiv(m, block_m) * triton.cdiv(n, block_n)
    splits = splits or _splits(tiles, k, a.device)
    k_per_split = triton.cdiv(triton.cdiv(k, splits), block_k) * block_k if k else block_k
    splits = triton.cdiv(k, k_per_split) if k else 1
    split = splits > 1
    part = torch.empty((splits, m, n), dtype=torch.float32, device=a.device) if split else c
    rs = torch.zeros((splits, m), dtype=torch.float32, device=a.device) if row_sums else c
    if m and n:
        _gemm[(triton.cdiv(m, block_m), triton.cdiv(n, block_n), splits)](
            a, b, c, bias if bias is not None else c, aux if aux is not None else c, pre if pre is not None else c,
            part, rs, m, n, k, k_per_split, a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), sxm,
            HAS_BIAS=bias is not None, ACT=ACTS[act], STORE_PRE=pre is not None,
            ACT_GRAD=ACTS[act_grad] if act_grad_at is not None else 0, ADD=add is not None, SPLIT=split,
            ROW_SUMS=row_sums, FP32_DOT=_fp32_dot(a), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)
    if split:  # no epilogue options reach a split GEMM (the weight gradients need none)
        assert bias is None and act is None and pre is None and aux is None
        c = tnorm.sum_partials(part.view(splits, m * n), out_dtype).view(m, n)
    if not row_sums:
        return c
    return c, (tnorm.sum_partials(rs, torch.float32) if splits > 1 else rs[0])


def weight_grad(dy2: torch.Tensor, x2: torch.Tensor, weight_dtype: torch.dtype, with_bias: bool):
    """(dW = dYᵀ X, dbias = Σ_rows dY or None) for a Linear with rows dy2 [M, N] and inputs x2 [M, K]."""
    if with_bias:
        dw, db = matmul(dy2.t(), x2, weight_dtype, row_sums=True)
        return dw, db.to(weight_dtype)
    return matmul(dy2.t(), x2, weight_dtype), None
