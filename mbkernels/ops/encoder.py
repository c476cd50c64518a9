"""encoder: a stack of MobileBERT layers as one op, for inference.

Each layer is what `MobileBertLayer` runs as three ops — `bottleneck_attention → ffn_stack →
linear_norm(residual=h)` (the last only with a bottleneck) — without dropout and without scores.
On CPU the fp32 path runs `mbkernels_cpu::encoder_forward`: the same C++ kernels and cached packed
weights as the per-op path, in one call instead of 3 per layer (each op call through Python costs
~25 µs: ~2 ms of a 24-layer forward). On CUDA, or under `use_backend("triton")`, the forward runs
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
from mbkernels.ops import reference
from mbkernels.ops._registry import Kernel, OpDef, define

ATTENTION_WEIGHTS = 18


def weights_per_layer(num_ffn: int) -> int:
    return ATTENTION_WEIGHTS + 6 * num_ffn + 4


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
    kernels=(Kernel("triton", lambda *args: _triton_layers(*args) is not None, _triton_forward, None),),
))


def encoder(h: torch.Tensor, key_mask: torch.Tensor | None, weights: Sequence[torch.Tensor], num_layers: int,
            num_heads: int, mode: str = "shared", norm: str = "nonorm", act: str = "relu", eps: float = 1e-12,
            ffn_eps: Sequence[float] = (1e-12, 1e-12, 1e-12, 1e-5), use_bottleneck: bool = True) -> torch.Tensor:
    """`num_layers` MobileBERT layers on h [batch, seq, hidden] (see the module docstring)."""
    per = weights_per_layer(len(ffn_eps))
    if len(weights) != num_layers * per:
        raise ValueError(f"encoder: weights expected {per} tensors per layer x {num_layers} layers, "
                         f"got {len(weights)}")
    args = (h, key_mask, list(weights), num_layers, num_heads, mode, norm, act, float(eps),
            [float(e) for e in ffn_eps], use_bottleneck)
    return ENCODER(*args)
