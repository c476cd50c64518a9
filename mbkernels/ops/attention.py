"""attention: softmax(QKᵀ/√d + mask) V on [B, H, S, D], optionally returning the pre-softmax
masked scores (masked keys hold finfo(dtype).min) that attention transfer needs.

On CUDA, or under `use_backend("triton")`, forward and backward run the flash-style kernels of
`mbkernels/triton/attention.py` (head sizes 16–256, powers of two; others run the reference); on
CPU the fp32 forward runs `mbkernels_cpu::attention_forward` and the backward
`mbkernels_cpu::attention_backward` (the torch-free attention core, csrc/core/ops/attention.h: any
head size, attention dropout from the seed's counter-based mask, no B×H×S×S buffer unless scores
are asked for; the backward recomputes P per query block and takes the scores' gradient too);
other dtypes run the reference inside the custom op.
"""

from __future__ import annotations

import torch

from mbkernels import backend
from mbkernels.ops import reference
from mbkernels.ops._registry import OpDef, _tensors, define, no_grad_placeholder
from mbkernels.ops.dropout import new_seed


def _triton_attention(q, k, v):
    """The Triton attention module when it runs these inputs, else None (the reference runs)."""
    from mbkernels import triton as mbt
    if not mbt.available():
        return None
    from mbkernels.triton import attention as tk
    return tk if tk.supported(q, k, v) else None


def _attention_triton(q, k, v, key_mask, dropout_p, seed, return_scores):
    tk = _triton_attention(q, k, v)
    if tk is None:
        return NotImplemented
    return tk.attention_forward(q, k, v, key_mask, dropout_p, seed, return_scores)


def _attention_triton_backward(grads, needs_grad, q, k, v, key_mask, dropout_p, seed, return_scores):
    tk = _triton_attention(q, k, v)
    if tk is None:
        return NotImplemented
    dscores = grads[1] if return_scores and grads[1].numel() else None
    dq, dk, dv = tk.attention_backward(grads[0], dscores, q, k, v, key_mask, dropout_p, seed)
    flat = _tensors((q, k, v, key_mask, seed))
    # A fresh placeholder per slot: custom-op outputs may not alias each other.
    return [g if need and g is not None else no_grad_placeholder(flat)
            for g, need in zip((dq, dk, dv, None, None), needs_grad)]


def _attention_cpu(q, k, v, key_mask, dropout_p, seed, return_scores):
    # Dropout without a seed is torch's RNG dropout: only the reference has it.
    if q.dtype != torch.float32 or (dropout_p > 0 and seed is None):
        return NotImplemented
    return torch.ops.mbkernels_cpu.attention_forward(q, k, v, key_mask, dropout_p, seed, return_scores)


def _attention_cpu_backward(grads, needs_grad, q, k, v, key_mask, dropout_p, seed, return_scores):
    if q.dtype != torch.float32 or (dropout_p > 0 and seed is None):
        return NotImplemented
    dscores = grads[1] if return_scores and grads[1].numel() else None
    # Only the scores used: autograd hands an empty gradient for the context.
    dctx = grads[0] if grads[0].numel() else q.new_zeros((*q.shape[:3], v.shape[3]))
    return torch.ops.mbkernels_cpu.attention_backward(dctx, dscores, q, k, v, key_mask, dropout_p, seed,
                                                      needs_grad)


def _fake(q, k, v, key_mask, dropout_p, seed, return_scores):
    b, h, s, _ = q.shape
    scores = q.new_empty((b, h, s, k.shape[2])) if return_scores else q.new_empty(0)
    return q.new_empty((b, h, s, v.shape[3])), scores


ATTENTION = define(OpDef(
    name="attention",
    args="Tensor q, Tensor k, Tensor v, Tensor? key_mask, float dropout_p, Tensor? seed, bool return_scores",
    returns="(Tensor, Tensor)",
    reference_forward=reference.attention,
    fake=_fake,
    cpu=_attention_cpu,
    cpu_backward=_attention_cpu_backward,
    triton=_attention_triton,
    triton_backward=_attention_triton_backward,
))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None,
              dropout_p: float = 0.0, return_scores: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-head attention; returns (context [B, H, S, D], scores [B, H, S, S] or an empty tensor)."""
    if backend.current_backend() == "reference":
        return reference.attention(q, k, v, key_mask, dropout_p, None, return_scores)
    seed = new_seed() if dropout_p > 0 else None
    return torch.ops.mbkernels.attention(q, k, v, key_mask, dropout_p, seed, return_scores)
