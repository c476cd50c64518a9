"""Model outputs shaped like Hugging Face's: attribute access, `out[0]`, `out["logits"]`.

Integer indexing walks the fields that are not None, in order, as HF's ModelOutput does.
`attention_scores` is ours: each layer's pre-softmax masked scores (for attention transfer).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

Tensors = tuple[torch.Tensor, ...]


class ModelOutput:
    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)

    def __getitem__(self, key: int | slice | str) -> Any:
        if isinstance(key, str):
            return getattr(self, key)
        return self.to_tuple()[key]

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


@dataclass
class BaseModelOutputWithPooling(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None
    attention_scores: Tensors | None = None


@dataclass
class MobileBertForPreTrainingOutput(ModelOutput):
    loss: torch.Tensor | None = None
    prediction_logits: torch.Tensor | None = None
    seq_relationship_logits: torch.Tensor | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None
    attention_scores: Tensors | None = None


@dataclass
class _LogitsOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None
    attention_scores: Tensors | None = None


class MaskedLMOutput(_LogitsOutput):
    pass


class NextSentencePredictorOutput(_LogitsOutput):
    pass


class SequenceClassifierOutput(_LogitsOutput):
    pass


class TokenClassifierOutput(_LogitsOutput):
    pass


@dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    loss: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None
    attention_scores: Tensors | None = None
