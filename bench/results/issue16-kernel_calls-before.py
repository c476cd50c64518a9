# The `kernel` provider of the overhead cases as run on the "before" tree (53399d9 + the case): the
# old torch.ops.mbkernels_cpu ops. Kept with issue16-before-after.md so that run can be repeated.
"""The `kernel` provider of the call-overhead cases (bench/cases.py, `overhead_<op>`): each public op's
C++ kernel called directly, here the torch-bound `torch.ops.mbkernels_cpu.*` ops (csrc/torch/), as
the CPU backend functions in mbkernels/ops/<op>.py call them.

`KERNEL_CALLS[op](args, kwargs)` takes the public op's arguments exactly as the `fused` provider
passes them to `mbkernels.ops.<op>`, does outside the timed region what the kernel call does not need
to repeat (the argument conversion of the public function; one first call, which packs the weights
into the C++ cache keyed on the weight tensors) and returns the zero-argument call that is timed; it
returns the output, which the harness checks against the reference. These ops allocate their outputs
themselves (inside the timed call). This is the one file of the overhead benchmark that follows the
binding: the same cases run on a commit with another binding through its own copy of this file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

DESCRIPTION = "torch.ops.mbkernels_cpu.<op>_forward (TORCH_LIBRARY op, outputs allocated inside); weights packed beforehand"

Prepared = Callable[[], Any]


def _ops():
    import mbkernels  # noqa: F401  loads mbkernels._C, which registers the mbkernels_cpu ops

    return torch.ops.mbkernels_cpu


def _prepared(f, *args) -> Prepared:
    """The call, made once here: a first call packs and caches the weights, as the fused op's first did."""
    def call():
        return f(*args)
    call()
    return call


def nonorm(args: tuple, kwargs: dict) -> Prepared:
    x, w, b, r = args
    return _prepared(_ops().nonorm_forward, x, w, b, r)


def layernorm(args: tuple, kwargs: dict) -> Prepared:
    x, w, b, r = args
    return _prepared(_ops().layernorm_forward, x, w, b, r, float(kwargs.get("eps", 1e-12)))


def linear_norm(args: tuple, kwargs: dict) -> Prepared:
    x, weight, bias, nw, nb, r = args
    return _prepared(_ops().linear_norm_forward, x, weight, bias, nw, nb, r, kwargs.get("norm", "nonorm"),
                     float(kwargs.get("eps", 1e-12)))


def bottleneck_attention(args: tuple, kwargs: dict) -> Prepared:
    h, key_mask, *weights = args
    if kwargs.get("attn_dropout_p") or kwargs.get("hidden_dropout_p"):
        raise ValueError("overhead bottleneck_attention: the case runs without dropout")
    return _prepared(_ops().bottleneck_attention_forward, h, key_mask, *weights, kwargs["num_heads"],
                     kwargs.get("mode", "shared"), kwargs.get("norm", "nonorm"), float(kwargs.get("eps", 1e-12)),
                     0.0, 0.0, None, bool(kwargs.get("return_scores", False)))


def attention(args: tuple, kwargs: dict) -> Prepared:
    q, k, v, key_mask = args
    if kwargs.get("dropout_p"):
        raise ValueError("overhead attention: the case runs without dropout")
    return _prepared(_ops().attention_forward, q, k, v, key_mask, 0.0, None, bool(kwargs.get("return_scores", False)))


def ffn_stack(args: tuple, kwargs: dict) -> Prepared:
    x, *lists = args
    n = len(lists[0])
    eps = [float(e) for e in kwargs.get("eps") or [1e-12] * n]
    return _prepared(_ops().ffn_stack_forward, x, *(list(t) for t in lists), kwargs.get("act", "relu"),
                     kwargs.get("norm", "nonorm"), eps)


def embedding(args: tuple, kwargs: dict) -> Prepared:
    ids, embeds, types, positions, *tables = args
    if kwargs.get("dropout_p"):
        raise ValueError("overhead embedding: the case runs without dropout")
    if positions.dim() == 1 or positions.shape[0] == 1:  # as ops.embedding expands them
        positions = positions.expand(types.shape[0], positions.shape[-1])
    return _prepared(_ops().embedding_forward, ids, embeds, types, positions, *tables,
                     bool(kwargs.get("trigram", True)), kwargs.get("norm", "nonorm"), float(kwargs.get("eps", 1e-5)),
                     0.0, None)


def encoder(args: tuple, kwargs: dict) -> Prepared:
    h, key_mask, weights, num_layers, num_heads, mode, norm, act, eps, ffn_eps, use_bottleneck = args
    return _prepared(_ops().encoder_forward, h, key_mask, list(weights), num_layers, num_heads, mode, norm, act,
                     float(eps), [float(e) for e in ffn_eps], use_bottleneck)


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
