"""The `kernel` provider of the call-overhead cases (bench/cases.py, `overhead_<op>`): each public op's
C++ kernel called directly, here the torch-free `mbkernels._C` functions (csrc/python/*.cc).

`KERNEL_CALLS[op](args, kwargs)` takes the public op's arguments exactly as the `fused` provider
passes them to `mbkernels.ops.<op>`, does outside the timed region everything the kernel call does not
need to repeat (pack the weights, allocate the outputs, read pointers, strides and the thread count)
and returns the zero-argument call that is timed; it returns the output tensor, which the harness
checks against the reference. This is the one file of the overhead benchmark that follows the binding:
the same cases run on a commit with another binding through its own copy of this file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

DESCRIPTION = "mbkernels._C.<op>_forward on data pointers; weights packed and outputs allocated beforehand"

Prepared = Callable[[], torch.Tensor]


def _C():
    from mbkernels import _C as c  # imported on first use: the report and the grid need no build

    return c


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _rows(x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """x as contiguous [rows, cols] (a view when it already is)."""
    x = x.contiguous()
    return x, x.numel() // x.shape[-1], x.shape[-1]


def _pack(weight: torch.Tensor, bias: torch.Tensor | None):
    n, k = weight.shape
    return _C().pack_weights(weight.data_ptr(), weight.stride(0), weight.stride(1), _ptr(bias), n, k)


def nonorm(args: tuple, kwargs: dict) -> Prepared:
    x, w, b, r = args
    x, rows, cols = _rows(x)
    r = None if r is None else r.contiguous()
    y = torch.empty_like(x)
    f, threads = _C().nonorm_forward, torch.get_num_threads()
    px, pr, pw, pb, py = _ptr(x), _ptr(r), _ptr(w), _ptr(b), _ptr(y)
    f64 = x.dtype == torch.float64

    def call():
        f(px, pr, pw, pb, py, rows, cols, f64, threads)
        return y
    return call


def layernorm(args: tuple, kwargs: dict) -> Prepared:
    x, w, b, r = args
    eps = float(kwargs.get("eps", 1e-12))
    x, rows, cols = _rows(x)
    r = None if r is None else r.contiguous()
    y = torch.empty_like(x)
    f, threads = _C().layernorm_forward, torch.get_num_threads()
    px, pr, pw, pb, py = _ptr(x), _ptr(r), _ptr(w), _ptr(b), _ptr(y)

    def call():
        f(px, pr, pw, pb, eps, py, rows, cols, threads)
        return y
    return call


def linear_norm(args: tuple, kwargs: dict) -> Prepared:
    x, weight, bias, nw, nb, r = args
    norm, eps = kwargs.get("norm", "nonorm"), float(kwargs.get("eps", 1e-12))
    x, rows, k = _rows(x)
    n = weight.shape[0]
    packed = _pack(weight, bias)
    r = None if r is None else r.contiguous()
    y = x.new_empty((*x.shape[:-1], n))
    f, threads = _C().linear_norm_forward, torch.get_num_threads()
    px, pr, pnw, pnb, py = _ptr(x), _ptr(r), _ptr(nw), _ptr(nb), _ptr(y)

    def call():
        f(px, k, rows, packed, pr, n, norm, pnw, pnb, eps, py, n, threads)
        return y
    return call


def ffn_stack(args: tuple, kwargs: dict) -> Prepared:
    x, w1, b1, w2, b2, nw, nb = args
    act, norm = kwargs.get("act", "relu"), kwargs.get("norm", "nonorm")
    eps = [float(e) for e in kwargs.get("eps") or [1e-12] * len(w1)]
    x, rows, width = _rows(x)
    intermediate = [_pack(w, b) for w, b in zip(w1, b1)]
    output = [_pack(w, b) for w, b in zip(w2, b2)]
    pnw, pnb = [_ptr(t) for t in nw], [_ptr(t) for t in nb]
    y = torch.empty_like(x)
    f, threads = _C().ffn_stack_forward, torch.get_num_threads()
    px, py = _ptr(x), _ptr(y)

    def call():
        f(px, width, rows, intermediate, output, pnw, pnb, eps, act, norm, py, width, 0, 0, 0, threads)
        return y
    return call


def attention(args: tuple, kwargs: dict) -> Prepared:
    q, k, v, key_mask = args
    if kwargs.get("return_scores") or kwargs.get("dropout_p"):
        raise ValueError("overhead attention: the case runs without scores and dropout")
    b, h, s, d = q.shape
    sk = k.shape[2]
    mask = None if key_mask is None else key_mask.to(torch.bool).contiguous()  # one byte per key
    ctx = q.new_empty((b, h, s, v.shape[3]))
    f, threads = _C().attention_forward, torch.get_num_threads()
    strides = [tuple(t.stride()[:3]) for t in (q, k, v, ctx)]
    pq, pk, pv, pm, pc = _ptr(q), _ptr(k), _ptr(v), _ptr(mask), _ptr(ctx)

    def call():
        f(pq, strides[0], pk, strides[1], pv, strides[2], b, h, s, sk, d, pm, 0.0, 0, pc, strides[3], 0, threads)
        return ctx
    return call


def _not_bound(op: str) -> Callable[[tuple, dict], Prepared]:
    def prepare(args: tuple, kwargs: dict) -> Prepared:
        raise NotImplementedError(f"overhead_{op}: mbkernels._C.{op}_forward is not yet bound "
                                  f"(csrc/python/{op}.cc is a stub); its kernel provider waits for it")
    return prepare


KERNEL_CALLS: dict[str, Callable[[tuple, dict], Prepared]] = {
    "nonorm": nonorm,
    "layernorm": layernorm,
    "linear_norm": linear_norm,
    "bottleneck_attention": _not_bound("bottleneck_attention"),
    "attention": attention,
    "ffn_stack": ffn_stack,
    "embedding": _not_bound("embedding"),
    "encoder": _not_bound("encoder"),
}
