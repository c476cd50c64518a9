"""The `kernel` provider of the call-overhead cases (bench/cases.py, `overhead_<op>`): each public op's
C++ kernel called directly, here the torch-free `mbkernels._C` functions (csrc/python/*.cc).

`KERNEL_CALLS[op](args, kwargs)` takes the public op's arguments exactly as the `fused` provider
passes them to `mbkernels.ops.<op>`, does outside the timed region everything the kernel call does not
need to repeat (pack the weights, allocate the outputs, read pointers, strides and the thread count)
and returns the zero-argument call that is timed; it returns the output tensor, which the harness
checks against the reference. The call holds every tensor whose pointer it passes (`call.held`): a
copy made here (a mask converted to bytes, a contiguous copy) would otherwise be freed on return. This is the one file of the overhead benchmark that follows the binding:
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
    call.held = [v for v in locals().values() if isinstance(v, torch.Tensor)]  # pointers above stay valid
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
    call.held = [v for v in locals().values() if isinstance(v, torch.Tensor)]  # pointers above stay valid
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
    call.held = [v for v in locals().values() if isinstance(v, torch.Tensor)]  # pointers above stay valid
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
    call.held = [v for v in locals().values() if isinstance(v, torch.Tensor)]  # pointers above stay valid
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
    call.held = [v for v in locals().values() if isinstance(v, torch.Tensor)]  # pointers above stay valid
    return call


def bottleneck_attention(args: tuple, kwargs: dict) -> Prepared:
    from mbkernels.ops.bottleneck_attention import WEIGHT_INDEX, prepared

    h, key_mask, *weights = args
    if kwargs.get("return_scores"):
        raise ValueError("overhead bottleneck_attention: the case runs without scores")
    mode, norm = kwargs.get("mode", "shared"), kwargs.get("norm", "nonorm")
    eps, heads = float(kwargs.get("eps", 1e-12)), kwargs["num_heads"]
    batch, seq, hidden = h.shape
    h = h.contiguous()
    width = weights[WEIGHT_INDEX["output_weight"]].shape[0]
    over_h, over_b, output, norms, copies = prepared(weights, mode)  # the op's own weight arguments
    mask = None if key_mask is None else key_mask.to(torch.uint8).contiguous()
    y = h.new_empty((batch, seq, width))
    f, threads = _C().bottleneck_attention_forward, torch.get_num_threads()
    ph, pm, py = _ptr(h), _ptr(mask), _ptr(y)

    def call():
        f(ph, hidden, batch, seq, pm, over_h, over_b, output, mode, norm, eps, heads, *norms, 0.0, 0.0, 0, py, 0,
          threads)
        return y
    # The pointers above stay valid while these live.
    call.held = [v for v in locals().values() if isinstance(v, torch.Tensor)] + weights + copies
    return call


def embedding(args: tuple, kwargs: dict) -> Prepared:
    from mbkernels.ops.embedding import _Operands

    (input_ids, inputs_embeds, token_type_ids, position_ids, words, tw, tb, positions, types, nw, nb) = args
    trigram, norm, eps = kwargs.get("trigram", True), kwargs.get("norm", "nonorm"), float(kwargs.get("eps", 1e-5))
    if position_ids.shape[0] == 1:
        position_ids = position_ids.expand(token_type_ids.shape[0], -1)
    o = _Operands(input_ids, inputs_embeds, token_type_ids, position_ids, words, tw, tb, positions, types, trigram)
    y = o.words.new_empty((o.batch, o.seq, o.hidden))
    f, threads = _C().embedding_forward, torch.get_num_threads()
    leading, pnw, pnb, py = o.leading, _ptr(nw), _ptr(nb), _ptr(y)

    def call():
        f(*leading, norm, pnw, pnb, eps, 0.0, 0, py, 0, 0, threads)
        return y
    call.held = [v for v in locals().values() if isinstance(v, torch.Tensor)]  # pointers above stay valid
    return call


def encoder(args: tuple, kwargs: dict) -> Prepared:
    from mbkernels.ops.encoder import _layers  # the op's own per-layer arguments (packings, pointers)

    h, key_mask, weights, num_layers, num_heads, mode, norm, act, eps, ffn_eps, use_bottleneck = args
    layers, held = _layers(weights, num_layers, mode, ffn_eps, use_bottleneck)
    batch, seq, hidden = h.shape
    source = h.contiguous()
    out = source.clone()
    mask = None if key_mask is None else key_mask.to(torch.uint8).contiguous()
    f, threads = _C().encoder_forward, torch.get_num_threads()
    pm, po = _ptr(mask), _ptr(out)

    def call():
        out.copy_(source)  # the layers run in place: the op clones its input too
        f(po, batch, seq, hidden, pm, *layers, num_heads, mode, norm, act, eps, ffn_eps, threads)
        return out
    call.held = [v for v in locals().values() if isinstance(v, torch.Tensor)] + held  # pointers above stay valid
    return call


KERNEL_CALLS: dict[str, Callable[[tuple, dict], Prepared]] = {
    "nonorm": nonorm,
    "layernorm": layernorm,
    "linear_norm": linear_norm,
    "bottleneck_attention": bottleneck_attention,
    "attention": attention,
    "ffn_stack": ffn_stack,
    "embedding": embedding,
    "encoder": encoder,
}
