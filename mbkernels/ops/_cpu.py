"""What the CPU kernels share: tensors handed to the torch-free `mbkernels._C` as pointers, the
packed GEMM, and the norm backward that linear_norm, ffn_stack, bottleneck_attention and embedding
all end with.

`_C` takes raw data pointers, sizes and strides and writes into outputs allocated here, so every
tensor it reads is float32 on the CPU (the kernels' `supports` said so) and laid out as passed. A
tensor whose pointer is passed must be held by a name over the call: `t.contiguous().data_ptr()`
would hand over the memory of a temporary freed before the kernel reads it.
"""

from __future__ import annotations

import torch

from mbkernels import backend
from mbkernels.ops import _packed, int8


def ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def threads() -> int:
    # _C and torch share one OpenMP runtime (libgomp.so.1): torch's thread count is ours.
    return torch.get_num_threads()


def float32(*tensors: torch.Tensor | None) -> bool:
    """Whether every given tensor is float32 or an int8 weight (ops/int8.py; None is fine): what the
    C++ kernels take."""
    return all(t is None or t.dtype == torch.float32 or int8.form(t) is not None for t in tensors)


def rows(t: torch.Tensor, cols: int) -> tuple[torch.Tensor, int]:
    """`t` as [rows, cols] with unit column stride and its row stride, copying only when it has to."""
    if t.dim() == 2 and t.stride(1) == 1 and t.shape[1] == cols:
        return t, t.stride(0)
    r = t.reshape(-1, cols)
    if r.stride(-1) != 1 or (r.shape[0] > 1 and r.stride(0) < cols):
        r = r.contiguous()
    return r, (r.stride(0) if r.shape[0] > 1 else cols)


def packed(weight: torch.Tensor, bias: torch.Tensor | None = None):
    return _packed.packed([(weight, bias)])


def held_ptr(t: torch.Tensor | None, held: list) -> int:
    """t's data pointer for a value `_derived.derived` keeps: t's own when it is contiguous (the caller
    holds t over the call), else a contiguous copy's, the copy appended to `held` (kept with the value)."""
    if t is None:
        return 0
    if not t.is_contiguous():
        t = t.contiguous()
        held.append(t)
    return t.data_ptr()


def gemm(a: torch.Tensor, lda: int, weight, out: torch.Tensor, act: str = "none",
         residual: torch.Tensor | None = None, ld_residual: int = 0) -> torch.Tensor:
    """out [rows, n] = act(a Wᵀ + bias) [+ residual] on the packed `weight`."""
    if out.numel():
        backend._C.gemm(a.data_ptr(), lda, out.shape[0], weight, out.data_ptr(), out.stride(0), act,
                        ptr(residual), ld_residual, threads())
    return out


def norm_backward(norm: str, g: torch.Tensor, t: torch.Tensor, w: torch.Tensor, eps: float):
    """t [rows, n] the norm's input, g = dL/dN(t), both contiguous: (gt = dL/dt, gw, gb, gsum), gsum
    being gt's column sums (the gradient of a bias added before the norm)."""
    n, w = t.shape[1], w.contiguous()  # named: a temporary's data would be freed before the call
    gt = torch.empty_like(t)
    gw, gb, gsum = (t.new_empty(n) for _ in range(3))
    backend._C.norm_backward(norm, g.data_ptr(), t.data_ptr(), w.data_ptr(), eps,
                             gt.data_ptr(), gw.data_ptr(), gb.data_ptr(), gsum.data_ptr(), t.shape[0], n,
                             threads())
    return gt, gw, gb, gsum


def norm_forward(norm: str, t: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """N(t) over contiguous rows."""
    out = torch.empty_like(t) if out is None else out
    w, b = w.contiguous(), b.contiguous()  # named: a temporary's data would be freed before the call
    backend._C.norm_forward(norm, t.data_ptr(), 0, w.data_ptr(), b.data_ptr(), eps,
                            out.data_ptr(), t.shape[0], t.shape[1], threads())
    return out


def key_mask_bytes(key_mask: torch.Tensor | None) -> torch.Tensor | None:
    """The key mask [B, S] as contiguous uint8 (1 = attend), as the attention core reads it."""
    if key_mask is None:
        return None
    if key_mask.dtype in (torch.bool, torch.uint8):
        return key_mask.contiguous()  # a bool is one byte, 0 or 1: read as uint8 without a copy
    return key_mask.ne(0).to(torch.uint8)


def seed_of(seed: torch.Tensor | None) -> int:
    return 0 if seed is None else int(seed)


def head_strides(t: torch.Tensor) -> tuple[int, int, int]:
    """(batch, head, row) strides of a [B, H, S, D] tensor whose head dimension is contiguous."""
    return t.stride()[:3]


def heads(t: torch.Tensor) -> torch.Tensor:
    """t [B, H, S, D] with a unit stride along D (any other strides), copying only when needed."""
    return t if t.stride(3) == 1 or t.shape[3] <= 1 else t.contiguous()
