"""Task heads on the MobileBERT backbone, with HF's class names, parameter names and losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


from mbkernels.config import MobileBertConfig
from mbkernels.modeling import LayerNorm, MobileBertModel, MobileBertPreTrainedModel
from mbkernels.ops.reference import activation
from mbkernels.outputs import (
    MaskedLMOutput,
    MobileBertForPreTrainingOutput,
    NextSentencePredictorOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

_BACKBONE_ARGS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds",
                  "output_hidden_states", "output_attentions", "output_attention_scores")


class MobileBertPredictionHeadTransform(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.act = config.hidden_act
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)  # a real LayerNorm, always

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(activation(self.dense(h), self.act))


class MobileBertLMPredictionHead(nn.Module):
    """logits = t @ [word_embeddingsᵀ (E×V); dense.weight ((hidden−E)×V)] + bias."""

    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.transform = MobileBertPredictionHeadTransform(config)
        # Stored [hidden − E, V] and never applied as a Linear (HF's layout, kept for checkpoints).
        self.dense = nn.Linear(config.vocab_size, config.hidden_size - config.embedding_size, bias=False)
        self.decoder = nn.Linear(config.embedding_size, config.vocab_size, bias=True)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        t = self.transform(h)
        return t.matmul(torch.cat([self.decoder.weight.t(), self.dense.weight], dim=0)) + self.bias


class MobileBertOnlyMLMHead(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.predictions = MobileBertLMPredictionHead(config)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.predictions(h)


class MobileBertOnlyNSPHead(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.seq_relationship(pooled)


class MobileBertPreTrainingHeads(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.predictions = MobileBertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, h: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.predictions(h), self.seq_relationship(pooled)


class _WithBackbone(MobileBertPreTrainedModel):
    base_model_prefix = "mobilebert"

    def _backbone(self, kwargs) -> object:
        return self.mobilebert(**{k: kwargs[k] for k in _BACKBONE_ARGS})

    @staticmethod
    def _extras(out) -> dict:
        return {"hidden_states": out.hidden_states, "attentions": out.attentions,
                "attention_scores": out.attention_scores}


class _TiedMLM(_WithBackbone):
    tied_keys = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")

    def tie_weights(self) -> None:
        self.cls.predictions.decoder.weight = self.mobilebert.embeddings.word_embeddings.weight
        self.cls.predictions.decoder.bias = self.cls.predictions.bias


def _mlm_loss(logits: torch.Tensor, labels: torch.Tensor | None, vocab: int) -> torch.Tensor | None:
    return None if labels is None else F.cross_entropy(logits.view(-1, vocab), labels.view(-1))


class MobileBertForPreTraining(_TiedMLM):
    def __init__(self, config: MobileBertConfig):
        super().__init__(config)
        self.mobilebert = MobileBertModel(config)
        self.cls = MobileBertPreTrainingHeads(config)
        self.init_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, next_sentence_label=None, output_hidden_states=False,
                output_attentions=False, output_attention_scores=False) -> MobileBertForPreTrainingOutput:
        out = self._backbone(locals())
        logits, nsp = self.cls(out.last_hidden_state, out.pooler_output)
        loss = None
        if labels is not None and next_sentence_label is not None:
            loss = _mlm_loss(logits, labels, self.config.vocab_size) + F.cross_entropy(
                nsp.view(-1, 2), next_sentence_label.view(-1))
        return MobileBertForPreTrainingOutput(loss, logits, nsp, **self._extras(out))


class MobileBertForMaskedLM(_TiedMLM):
    def __init__(self, config: MobileBertConfig):
        super().__init__(config)
        self.mobilebert = MobileBertModel(config, add_pooling_layer=False)
        self.cls = MobileBertOnlyMLMHead(config)
        self.init_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_hidden_states=False, output_attentions=False,
                output_attention_scores=False) -> MaskedLMOutput:
        out = self._backbone(locals())
        logits = self.cls(out.last_hidden_state)
        return MaskedLMOutput(_mlm_loss(logits, labels, self.config.vocab_size), logits, **self._extras(out))


class MobileBertForNextSentencePrediction(_WithBackbone):
    def __init__(self, config: MobileBertConfig):
        super().__init__(config)
        self.mobilebert = MobileBertModel(config)
        self.cls = MobileBertOnlyNSPHead(config)
        self.init_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_hidden_states=False, output_attentions=False,
                output_attention_scores=False) -> NextSentencePredictorOutput:
        out = self._backbone(locals())
        logits = self.cls(out.pooler_output)
        loss = None if labels is None else F.cross_entropy(logits.view(-1, 2), labels.view(-1))
        return NextSentencePredictorOutput(loss, logits, **self._extras(out))


def _classifier_dropout(config: MobileBertConfig) -> nn.Dropout:
    p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
    return nn.Dropout(p)


class MobileBertForSequenceClassification(_WithBackbone):
    def __init__(self, config: MobileBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mobilebert = MobileBertModel(config)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_hidden_states=False, output_attentions=False,
                output_attention_scores=False) -> SequenceClassifierOutput:
        out = self._backbone(locals())
        logits = self.classifier(self.dropout(out.pooler_output))
        return SequenceClassifierOutput(self._loss(logits, labels), logits, **self._extras(out))

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        """HF's rule: regression for one label, cross-entropy for integer labels, else multi-label BCE."""
        if labels is None:
            return None
        problem = self.config.problem_type
        if problem is None:
            if self.num_labels == 1:
                problem = "regression"
            elif labels.dtype in (torch.long, torch.int):
                problem = "single_label_classification"
            else:
                problem = "multi_label_classification"
        if problem == "regression":
            return F.mse_loss(logits.squeeze(), labels.squeeze()) if self.num_labels == 1 else F.mse_loss(logits, labels)
        if problem == "single_label_classification":
            return F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return F.binary_cross_entropy_with_logits(logits, labels)


class MobileBertForTokenClassification(_WithBackbone):
    def __init__(self, config: MobileBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mobilebert = MobileBertModel(config, add_pooling_layer=False)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_hidden_states=False, output_attentions=False,
                output_attention_scores=False) -> TokenClassifierOutput:
        out = self._backbone(locals())
        logits = self.classifier(self.dropout(out.last_hidden_state))
        loss = None if labels is None else F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return TokenClassifierOutput(loss, logits, **self._extras(out))


class MobileBertForQuestionAnswering(_WithBackbone):
    def __init__(self, config: MobileBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mobilebert = MobileBertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, start_positions=None, end_positions=None, output_hidden_states=False,
                output_attentions=False, output_attention_scores=False) -> QuestionAnsweringModelOutput:
        out = self._backbone(locals())
        start, end = self.qa_outputs(out.last_hidden_state).split(1, dim=-1)
        start, end = start.squeeze(-1).contiguous(), end.squeeze(-1).contiguous()
        loss = None
        if start_positions is not None and end_positions is not None:
            # Positions outside the sequence are ignored, as in HF.
            ignored = start.size(1)
            sp = start_positions.view(-1).clamp(0, ignored)
            ep = end_positions.view(-1).clamp(0, ignored)
            loss = (F.cross_entropy(start, sp, ignore_index=ignored) + F.cross_entropy(end, ep, ignore_index=ignored)) / 2
        return QuestionAnsweringModelOutput(loss, start, end, **self._extras(out))


__all__ = ["MobileBertForPreTraining", "MobileBertForMaskedLM", "MobileBertForNextSentencePrediction",
           "MobileBertForSequenceClassification", "MobileBertForTokenClassification",
           "MobileBertForQuestionAnswering"]


