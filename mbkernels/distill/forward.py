"""Partial forwards of a `MobileBertForPreTraining`: the first layers only, heads at chosen positions.

In the phase of layer l only the first l layers matter, and the MLM head is needed only at the masked
positions (15% of them, against a 30522-wide output): running just that is what keeps a progressive
phase and a distillation step cheap. Both use the model's own submodules (HF names), nothing else.
"""

from __future__ import annotations

import torch

from mbkernels.heads import MobileBertForPreTraining


def encode(model: MobileBertForPreTraining, input_ids: torch.Tensor, attention_mask: torch.Tensor,
           token_type_ids: torch.Tensor, upto: int | None = None,
           scores: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """(hidden states [embeddings, layer 1, …, layer upto], pre-softmax masked scores per layer)."""
    backbone = model.mobilebert
    key_mask = attention_mask.bool()
    h = backbone.embeddings(input_ids, token_type_ids)
    hidden, all_scores = [h], []
    for layer in backbone.encoder.layer[:upto]:
        h, s = layer(h, key_mask, return_scores=scores)
        hidden.append(h)
        all_scores.append(s)
    return hidden, all_scores


def mlm_logits(model: MobileBertForPreTraining, last_hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """MLM logits `[N, V]` at the True entries of the `[B, S]` bool `positions`."""
    return model.cls.predictions(last_hidden[positions])


def nsp_logits(model: MobileBertForPreTraining, last_hidden: torch.Tensor) -> torch.Tensor:
    return model.cls.seq_relationship(model.mobilebert.pooler(last_hidden))
