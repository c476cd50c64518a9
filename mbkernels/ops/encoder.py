"""encoder: a stack of MobileBERT layers as one op, for inference.

Each layer is what `MobileBertLayer` runs as three ops — `bottleneck_attention → ffn_stack →
linear_norm(residual=h)` (the last only with a bottleneck) — without dropout and without scores.
On CPU the fp32 path runs `_C.encoder_forward` (csrc/core/ops/layer.h, the one layer composition
the C++ engine runs too): the same kernels and cached packed weights as the per-op path, in one
call instead of 3 op calls per layer. On CUDA, or under `use_backend("triton")`, the forward runs
the layers through the Triton kernels of the three ops. Elsewhere, and for its backward, the
reference runs inside the op. The modules use it when nothing needs gradients, scores or per-layer hidden states.

`weights` is flat: per layer the 18 bottleneck_attention weights (that op's argument order), then
per FFN [W1, b1, W2, b2, norm_weight, norm_bias], then the output bottleneck [W, b, norm_weight,
norm_bias]; an empty tensor stands for an absent one (so the list is a plain `Tensor[]`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mbkernels import backend
from mbkernels.ops import _cpu, reference
from mbkernels.ops.bottleneck_attention import prepared
from mbkernels.ops.ffn_stack import prepared as ffn_prepared
from mbkernels.ops._arguments import ATTENTION_WEIGHTS
from mbkernels.ops._arguments import encoder_weights_per_layer as weights_per_layer
from mbkernels.ops._registry import Kernel, OpDef, define


def _reference(h, key_mask, weights, num_layers, num_heads, mode, norm, act, eps, ffn_eps, use_bottleneck):
    n = len(ffn_eps)
    per = weights_per_layer(n)
    for layer in range(num_layers):
        w = [t if t.numel() else None for t in weights[layer * per:(layer + 1) * per]]
        a, _ = reference.bottleneck_attention(h, key_mask, *w[:ATTENTION_WEIGHTS], num_heads, mode, norm, eps)
        f = w[ATTENTION_WEIGHTS:ATTENTION_WEIGHTS + 6 * n]
        a = reference.ffn_stack(a, *(list(f[j::6]) for j in range(6)), act, norm, ffn_eps)
        h = reference.linear_norm(a, *w[-4:], residual=h, norm_kind=norm, eps=eps) if use_bottleneck else a
    return h


def _supports_cpu(h, key_mask, weights, *rest):
    known = getattr(weights, "known", None)  # a checked list (_arguments.CheckedWeights) knows its dtypes
    return _cpu.float32(h) and (known.float32 if known is not None else _cpu.float32(*weights))


def _layers(weights, num_layers, mode, ffn_eps, use_bottleneck) -> tuple:
    """`_C.encoder_forward`'s per-layer arguments (packed weights, norm-parameter pointers) and the
    contiguous copies those pointers may point into. Each layer's attention and FFN arguments are
    what the per-op path prepares (and finds again: `_packed.prepared`)."""
    n, per = len(ffn_eps), weights_per_layer(len(ffn_eps))
    held = []
    over_h, over_b, attention_output, attention_norms = [], [], [], []
    ffn_inter, ffn_out, ffn_nw, ffn_nb, output, output_nw, output_nb = [], [], [], [], [], [], []
    for layer in range(num_layers):
        w = [t if t.numel() else None for t in weights[layer * per:(layer + 1) * per]]
        a, b, o, norms, copies = prepared(w[:ATTENTION_WEIGHTS], mode)
        over_h.append(a)
        over_b.append(b)
        attention_output.append(o)
        attention_norms.append(norms)
        f = w[ATTENTION_WEIGHTS:ATTENTION_WEIGHTS + 6 * n]
        inter, out, nw, nb, ffn_copies = ffn_prepared(*(list(f[j::6]) for j in range(6)))
        ffn_inter.append(inter)
        ffn_out.append(out)
        ffn_nw.append(nw)
        ffn_nb.append(nb)
        output.append(_cpu.packed(w[-4], w[-3]) if use_bottleneck else None)
        output_nw.append(_cpu.held_ptr(w[-2], held) if use_bottleneck else 0)
        output_nb.append(_cpu.held_ptr(w[-1], held) if use_bottleneck else 0)
        held += copies + ffn_copies
    return (over_h, over_b, attention_output, attention_norms, ffn_inter, ffn_out, ffn_nw, ffn_nb, output,
            output_nw, output_nb), held


def _cached_layers(weights, num_layers, mode, ffn_eps, use_bottleneck) -> tuple:
    """`_layers` for the active ISA, kept with the checked weight set (`weights.known`): a model's
    inference calls pass the same parameters every time."""
    prepared, isa = weights.known.prepared, backend._C.get_isa()
    got = prepared.get(("cpu", isa))
    if got is None:
        got = prepared[("cpu", isa)] = _layers(weights, num_layers, mode, ffn_eps, use_bottleneck)
    return got


def _cpu_forward(h, key_mask, weights, num_layers, num_heads, mode, norm, act, eps, ffn_eps, use_bottleneck, *,
                 save):
    layers, held = _cached_layers(weights, num_layers, mode, ffn_eps, use_bottleneck)  # held: alive over the call
    out = h.contiguous().clone()  # the layers run in place
    mask = _cpu.key_mask_bytes(key_mask)
    batch, seq, hidden = h.shape
    backend._C.encoder_forward(out.data_ptr(), batch, seq, hidden, _cpu.ptr(mask), *layers, num_heads, mode, norm,
                               act, eps, ffn_eps, _cpu.threads())
    return out, []


def _triton_layers(h, key_mask, weights, num_layers, num_heads, mode, norm, act, eps, ffn_eps, use_bottleneck):
    """Each layer's Triton weights, when the Triton kernels take every layer; else None."""
    from mbkernels import triton as mbt
    if not mbt.available():
        return None
    from mbkernels.triton import bottleneck_attention as tba
    from mbkernels.triton import ffn_stack as tffn
    from mbkernels.triton import linear_norm as tlin
    n, per = len(ffn_eps), weights_per_layer(len(ffn_eps))
    layers = []
    for layer in range(num_layers):
        w = [t if t.numel() else None for t in weights[layer * per:(layer + 1) * per]]
        att, ffn = w[:ATTENTION_WEIGHTS], w[ATTENTION_WEIGHTS:ATTENTION_WEIGHTS + 6 * n]
        lists = [list(ffn[j::6]) for j in range(6)]
        a = h.new_empty((0, att[14].shape[0]))  # the shape and dtype of the attention output's rows
        if not (tba.supported(h, att, num_heads, mode, norm) and tffn.supported(a, lists[0], act, norm)
                and (not use_bottleneck or tlin.supported(a, w[-4], norm))):
            return None
        layers.append((att, lists, w[-4:]))
    return layers


def _triton_forward(h, key_mask, weights, num_layers, num_heads, mode, norm, act, eps, ffn_eps, use_bottleneck, *,
                    save):
    from mbkernels.triton import bottleneck_attention as tba
    from mbkernels.triton import ffn_stack as tffn
    from mbkernels.triton import linear_norm as tlin
    layers = _triton_layers(h, key_mask, weights, num_layers, num_heads, mode, norm, act, eps, ffn_eps,
                            use_bottleneck)
    for att, lists, out in layers:
        a, _ = tba.bottleneck_attention_forward(h, key_mask, att, num_heads, mode, norm, eps, 0.0, 0.0, None, False)
        a = tffn.ffn_stack_forward(a, *lists, act, norm, ffn_eps, 0.0, None)
        h = tlin.linear_norm_forward(a, *out, h, norm, eps, 0.0, None) if use_bottleneck else a
    return h, []


def _fake(h, *rest):
    return h.new_empty(h.shape)


ENCODER = define(OpDef(
    name="encoder",
    args=("Tensor h, Tensor? key_mask, Tensor[] weights, int num_layers, int num_heads, str mode, str norm, "
          "str act, float eps, float[] ffn_eps, bool use_bottleneck"),
    outputs=1,
    reference=_reference,
    fake=_fake,
    # The backward (the modules use this op only without gradients) is the reference's VJP.
    kernels=(Kernel("cpu", _supports_cpu, _cpu_forward, None),
             Kernel("triton", lambda *args: _triton_layers(*args) is not None, _triton_forward, None)),
))


def encoder(h: torch.Tensor, key_mask: torch.Tensor | None, weights: Sequence[torch.Tensor], num_layers: int,
            num_heads: int, mode: str = "shared", norm: str = "nonorm", act: str = "relu", eps: float = 1e-12,
            ffn_eps: Sequence[float] = (1e-12, 1e-12, 1e-12, 1e-5), use_bottleneck: bool = True) -> torch.Tensor:
    """`num_layers` MobileBERT layers on h [batch, seq, hidden] (see the module docstring)."""
    args = (h, key_mask, list(weights), num_layers, num_heads, mode, norm, act, float(eps),
            [float(e) for e in ffn_eps], use_bottleneck)
    return ENCODER(*args)
