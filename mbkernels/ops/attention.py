"""attention: softmax(QKᵀ/√d + mask) V on [B, H, S, D], optionally returning the pre-softmax
masked scores (masked keys hold finfo(dtype).min) that attention transfer needs.

Runs the reference inside its custom op until its kernels land.
"""

from __future__ import annotations

import torch

from mbkernels import backend
from mbkernels.ops import reference
from mbkernels.ops._registry import OpDef, define
from mbkernels.ops.dropout import new_seed


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
))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None,
              dropout_p: float = 0.0, return_scores: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-head attention; returns (context [B, H, S, D], scores [B, H, S, S] or an empty tensor)."""
    if backend.current_backend() == "reference":
        return reference.attention(q, k, v, key_mask, dropout_p, None, return_scores)
    seed = new_seed() if dropout_p > 0 else None
    return torch.ops.mbkernels.attention(q, k, v, key_mask, dropout_p, seed, return_scores)
