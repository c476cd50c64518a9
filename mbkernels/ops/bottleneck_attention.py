"""bottleneck_attention: the attention half of a MobileBERT block as one op.

`b = N(h Wiᵀ)`; `s = N(h Waᵀ)`; Q, K from `s`, V from `h` (mode "shared", MobileBERT); or Q, K, V
from `b` ("bottleneck", -tiny), from `h` with a bottleneck residual ("full", the IB-BERT teacher),
or from `h` with no bottleneck ("none", a BERT layer). `out = N(dropout(ctx Woᵀ + bo) + residual)`.
Returns (out, pre-softmax masked scores or an empty tensor). On CPU the fp32 forward runs
`mbkernels_cpu::bottleneck_attention_forward` (one packed GEMM over h for the projections that read
it, per-segment norms, the torch-free attention core with no B×H×S×S buffer unless scores are asked
for, the output projection with residual and norm fused; attention and hidden dropout from the
seed's counter-based masks) and the backward `mbkernels_cpu::bottleneck_attention_backward` (the
forward's intermediates recomputed on the packed GEMMs, the flash-style attention backward, the
norm backwards with their column sums in C++, the gradient GEMMs on ATen; a gradient on the
returned scores included). In training `bottleneck_attention` calls
`mbkernels::bottleneck_attention_train`, whose forward keeps those intermediates so the backward
skips the recompute. Other dtypes run the reference inside the custom op. On CUDA, or under
`use_backend("triton")`, both directions run
`mbkernels/triton/bottleneck_attention.py` (widths up to 8192, head sizes 16–256).
"""

from __future__ import annotations

import torch

from mbkernels import backend
from mbkernels.ops import reference
from mbkernels.ops._registry import Kernel, OpDef, define

MODES = ("shared", "bottleneck", "full", "none")

_WEIGHTS = ("input_weight", "input_bias", "input_norm_weight", "input_norm_bias",
            "attention_weight", "attention_bias", "attention_norm_weight", "attention_norm_bias",
            "query_weight", "query_bias", "key_weight", "key_bias", "value_weight", "value_bias",
            "output_weight", "output_bias", "output_norm_weight", "output_norm_bias")


def _fake(h, key_mask, *rest):
    weights, (num_heads, *_, return_scores) = _split_args(rest)
    b, s, _ = h.shape
    scores = h.new_empty((b, num_heads, s, s)) if return_scores else h.new_empty(0)
    return h.new_empty((b, s, weights[_WEIGHTS.index("output_weight")].shape[0])), scores


def _split_args(rest):
    return rest[:len(_WEIGHTS)], rest[len(_WEIGHTS):]


def _triton_bottleneck_attention(h, weights, num_heads, mode, norm):
    """The Triton bottleneck_attention module when it runs these inputs, else None."""
    from mbkernels import triton as mbt
    if not mbt.available():
        return None
    from mbkernels.triton import bottleneck_attention as tk
    return tk if tk.supported(h, weights, num_heads, mode, norm) else None


def _triton_supports(h, key_mask, *rest):
    weights, (num_heads, mode, norm, *_) = _split_args(rest)
    return _triton_bottleneck_attention(h, weights, num_heads, mode, norm) is not None


def _triton_forward(h, key_mask, *rest, save):
    weights, (num_heads, mode, norm, eps, attn_p, hidden_p, seed, return_scores) = _split_args(rest)
    tk = _triton_bottleneck_attention(h, weights, num_heads, mode, norm)
    return (*tk.bottleneck_attention_forward(h, key_mask, weights, num_heads, mode, norm, eps, attn_p, hidden_p,
                                             seed, return_scores), [])


def _triton_backward(grads, needs_grad, saved, h, key_mask, *rest):
    weights, (num_heads, mode, norm, eps, attn_p, hidden_p, seed, return_scores) = _split_args(rest)
    tk = _triton_bottleneck_attention(h, weights, num_heads, mode, norm)
    dscores = grads[1] if return_scores and grads[1].numel() else None
    dh, dweights = tk.bottleneck_attention_backward(grads[0], dscores, h, key_mask, weights, num_heads, mode,
                                                    norm, eps, attn_p, hidden_p, seed)
    return [dh, None, *dweights, None]


BOTTLENECK_ATTENTION = define(OpDef(
    name="bottleneck_attention",
    args=("Tensor h, Tensor? key_mask, "
          + ", ".join(f"Tensor? {w}" for w in _WEIGHTS)
          + ", int num_heads, str mode, str norm, float eps, float attn_dropout_p, "
            "float hidden_dropout_p, Tensor? seed, bool return_scores"),
    outputs=2,
    reference=reference.bottleneck_attention,
    fake=_fake,
    kernels=(Kernel("triton", _triton_supports, _triton_forward, _triton_backward),),
))


def bottleneck_attention(h: torch.Tensor, key_mask: torch.Tensor | None,
                         input_weight, input_bias, input_norm_weight, input_norm_bias,
                         attention_weight, attention_bias, attention_norm_weight, attention_norm_bias,
                         query_weight, query_bias, key_weight, key_bias, value_weight, value_bias,
                         output_weight, output_bias, output_norm_weight, output_norm_bias,
                         num_heads: int, mode: str = "shared", norm: str = "nonorm", eps: float = 1e-12,
                         attn_dropout_p: float = 0.0, hidden_dropout_p: float = 0.0,
                         return_scores: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """See the module docstring; weights of projections the mode does not use may be None."""
    if mode not in MODES:
        raise ValueError(f"bottleneck_attention: mode expected one of {MODES}, got {mode!r}")
    return BOTTLENECK_ATTENTION(h, key_mask, input_weight, input_bias, input_norm_weight, input_norm_bias,
                                attention_weight, attention_bias, attention_norm_weight, attention_norm_bias,
                                query_weight, query_bias, key_weight, key_bias, value_weight, value_bias,
                                output_weight, output_bias, output_norm_weight, output_norm_bias,
                                num_heads, mode, norm, eps, attn_dropout_p, hidden_dropout_p, None, return_scores)
