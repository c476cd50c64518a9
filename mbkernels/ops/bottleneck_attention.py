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
from mbkernels.ops._registry import OpDef, _tensors, define, define_saving, no_grad_placeholder, saving_applies
from mbkernels.ops.dropout import new_seed

MODES = ("shared", "bottleneck", "full", "none")

_WEIGHTS = ("input_weight", "input_bias", "input_norm_weight", "input_norm_bias",
            "attention_weight", "attention_bias", "attention_norm_weight", "attention_norm_bias",
            "query_weight", "query_bias", "key_weight", "key_bias", "value_weight", "value_bias",
            "output_weight", "output_bias", "output_norm_weight", "output_norm_bias")


def _fake(h, key_mask, *rest):
    weights = dict(zip(_WEIGHTS, rest))
    num_heads, _, _, _, _, _, _, return_scores = rest[len(_WEIGHTS):]
    b, s, _ = h.shape
    scores = h.new_empty((b, num_heads, s, s)) if return_scores else h.new_empty(0)
    return h.new_empty((b, s, weights["output_weight"].shape[0])), scores


def _triton_bottleneck_attention(h, weights, num_heads, mode, norm):
    """The Triton bottleneck_attention module when it runs these inputs, else None (the reference runs)."""
    from mbkernels import triton as mbt
    if not mbt.available():
        return None
    from mbkernels.triton import bottleneck_attention as tk
    return tk if tk.supported(h, weights, num_heads, mode, norm) else None


def _without_seed(rest) -> bool:
    """Dropout without a seed is torch's RNG dropout: only the reference has it."""
    _, (_, _, _, _, attn_p, hidden_p, seed, _) = _split_args(rest)
    return (attn_p > 0 or hidden_p > 0) and seed is None


def _bottleneck_attention_cpu(h, key_mask, *rest):
    if h.dtype != torch.float32 or _without_seed(rest):
        return NotImplemented
    return torch.ops.mbkernels_cpu.bottleneck_attention_forward(h, key_mask, *rest)


def _bottleneck_attention_cpu_backward(grads, needs_grad, h, key_mask, *rest):
    if h.dtype != torch.float32 or _without_seed(rest):
        return NotImplemented
    return _train_cpu_backward(grads, needs_grad, [], h, key_mask, *rest)


# The projections side by side in the GEMM over h (A) and over the bottleneck (B), in widths:
# csrc/core/ops/bottleneck_attention.h's projection_layout.
_SEGMENTS = {"shared": (3, 2), "bottleneck": (1, 3), "full": (4, 0), "none": (3, 0)}


def _train_cpu(h, key_mask, *rest):
    weights, (num_heads, mode, norm, eps, attn_p, hidden_p, seed, return_scores) = _split_args(rest)
    out, scores, *saved = torch.ops.mbkernels_cpu.bottleneck_attention_forward_train(
        h, key_mask, list(weights), num_heads, mode, norm, eps, attn_p, hidden_p, seed, return_scores)
    return out, scores, saved


def _train_saved_fake(h, key_mask, *rest):
    """Shapes of what the training forward keeps: a_pre (empty in mode none, where it is a), a, the
    bottleneck GEMM's output (empty without one), the context and the output norm's input."""
    weights, (num_heads, mode, *_) = _split_args(rest)
    rows, width = h.shape[0] * h.shape[1], weights[_WEIGHTS.index("output_weight")].shape[0]
    na, nb = (n * width for n in _SEGMENTS[mode])
    return [h.new_empty((rows, na) if mode != "none" else (0,)), h.new_empty((rows, na)),
            h.new_empty((rows, nb) if nb else (0,)), h.new_empty((rows, width)), h.new_empty((rows, width))]


def _train_cpu_backward(grads, needs_grad, saved, h, key_mask, *rest):
    """The C++ backward; `saved` is what `_train_cpu` kept, or empty (it recomputes the forward)."""
    return_scores = rest[-1]
    dscores = grads[1] if return_scores and grads[1].numel() else None
    # Only the scores used: autograd hands an empty gradient for the output.
    weights, _ = _split_args(rest)
    dout = grads[0] if grads[0].numel() else h.new_zeros((*h.shape[:2], weights[_WEIGHTS.index("output_weight")].shape[0]))
    return torch.ops.mbkernels_cpu.bottleneck_attention_backward(dout, dscores, h, key_mask, *rest[:-1],
                                                                 needs_grad, saved)


def _split_args(rest):
    weights = rest[:len(_WEIGHTS)]
    return weights, rest[len(_WEIGHTS):]


def _bottleneck_attention_triton(h, key_mask, *rest):
    weights, (num_heads, mode, norm, eps, attn_p, hidden_p, seed, return_scores) = _split_args(rest)
    tk = _triton_bottleneck_attention(h, weights, num_heads, mode, norm)
    if tk is None:
        return NotImplemented
    return tk.bottleneck_attention_forward(h, key_mask, weights, num_heads, mode, norm, eps, attn_p, hidden_p,
                                           seed, return_scores)


def _bottleneck_attention_triton_backward(grads, needs_grad, h, key_mask, *rest):
    weights, (num_heads, mode, norm, eps, attn_p, hidden_p, seed, return_scores) = _split_args(rest)
    tk = _triton_bottleneck_attention(h, weights, num_heads, mode, norm)
    if tk is None:
        return NotImplemented
    dscores = grads[1] if return_scores and grads[1].numel() else None
    dh, dweights = tk.bottleneck_attention_backward(grads[0], dscores, h, key_mask, weights, num_heads, mode,
                                                    norm, eps, attn_p, hidden_p, seed)
    flat = _tensors((h, key_mask, *weights, seed))
    # A fresh placeholder per slot: custom-op outputs may not alias each other.
    return [g if need and g is not None else no_grad_placeholder(flat)
            for g, need in zip((dh, None, *dweights, None), needs_grad)]


BOTTLENECK_ATTENTION = define(OpDef(
    name="bottleneck_attention",
    args=("Tensor h, Tensor? key_mask, "
          + ", ".join(f"Tensor? {w}" for w in _WEIGHTS)
          + ", int num_heads, str mode, str norm, float eps, float attn_dropout_p, "
            "float hidden_dropout_p, Tensor? seed, bool return_scores"),
    returns="(Tensor, Tensor)",
    reference_forward=reference.bottleneck_attention,
    fake=_fake,
    cpu=_bottleneck_attention_cpu,
    cpu_backward=_bottleneck_attention_cpu_backward,
    triton=_bottleneck_attention_triton,
    triton_backward=_bottleneck_attention_triton_backward,
))
define_saving(BOTTLENECK_ATTENTION, _train_cpu, _train_saved_fake, _train_cpu_backward)


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
    weights = (input_weight, input_bias, input_norm_weight, input_norm_bias,
               attention_weight, attention_bias, attention_norm_weight, attention_norm_bias,
               query_weight, query_bias, key_weight, key_bias, value_weight, value_bias,
               output_weight, output_bias, output_norm_weight, output_norm_bias)
    if backend.current_backend() == "reference":
        return reference.bottleneck_attention(h, key_mask, *weights, num_heads, mode, norm, eps,
                                              attn_dropout_p, hidden_dropout_p, None, return_scores)
    seed = new_seed() if attn_dropout_p > 0 or hidden_dropout_p > 0 else None
    args = (h, key_mask, *weights, num_heads, mode, norm, eps, attn_dropout_p, hidden_dropout_p, seed, return_scores)
    if saving_applies([h, *weights]):
        out, scores, _ = torch.ops.mbkernels.bottleneck_attention_train(*args)
        return out, scores
    return torch.ops.mbkernels.bottleneck_attention(*args)
