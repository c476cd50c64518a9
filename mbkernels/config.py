"""MobileBertConfig: Hugging Face's field names and defaults, the paper's presets, config.json I/O.

The dataclass mirrors `transformers.MobileBertConfig` so that a `config.json` written by either
library loads in the other. One combination HF cannot build is meaningful here: a bottleneck
(`use_bottleneck=True`) with neither `use_bottleneck_attention` nor `key_query_shared_bottleneck`
takes Q, K and V from the full-width input — the IB-BERT teacher (`ib_bert_large()`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

ACTIVATIONS = ("relu", "gelu")
NORMALIZATIONS = ("no_norm", "layer_norm")

# HF's PretrainedConfig bookkeeping keys that carry no architecture: accepted on read, dropped.
_HF_ONLY_KEYS = {
    "architectures", "model_type", "transformers_version", "_name_or_path", "torch_dtype", "dtype",
    "return_dict", "output_hidden_states", "output_attentions", "use_cache", "is_decoder", "is_encoder_decoder",
    "add_cross_attention", "chunk_size_feed_forward", "tie_encoder_decoder", "bos_token_id",
    "eos_token_id", "sep_token_id", "decoder_start_token_id", "label2id", "finetuning_task",
    "tokenizer_class", "prefix", "task_specific_params", "pruned_heads", "torchscript",
    "_attn_implementation_autoset", "_commit_hash", "embedding_dropout", "output_scores",
    "true_hidden_size",  # derived from use_bottleneck; recomputed here
}


@dataclass
class MobileBertConfig:
    vocab_size: int = 30522
    hidden_size: int = 512
    num_hidden_layers: int = 24
    num_attention_heads: int = 4
    intermediate_size: int = 512
    hidden_act: str = "relu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    embedding_size: int = 128
    trigram_input: bool = True
    use_bottleneck: bool = True
    intra_bottleneck_size: int = 128
    use_bottleneck_attention: bool = False
    key_query_shared_bottleneck: bool = True
    num_feedforward_networks: int = 4
    normalization_type: str = "no_norm"
    classifier_activation: bool = True
    classifier_dropout: float | None = None
    tie_word_embeddings: bool = True
    num_labels: int = 2
    problem_type: str | None = None
    id2label: dict[int, str] | None = field(default=None, repr=False)
    # The int8 settings of a quantized model (mbkernels/quantize.py); None: float weights.
    quantization_config: dict[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    # -- derived sizes ------------------------------------------------------------------------
    @property
    def true_hidden_size(self) -> int:
        """Width inside a block: the bottleneck width, or the full width without a bottleneck."""
        return self.intra_bottleneck_size if self.use_bottleneck else self.hidden_size

    @property
    def attention_head_size(self) -> int:
        return self.true_hidden_size // self.num_attention_heads

    @property
    def attention_mode(self) -> str:
        """Where Q, K, V come from, as the `bottleneck_attention` op names it."""
        if not self.use_bottleneck:
            return "none"
        if self.use_bottleneck_attention:
            return "bottleneck"
        if self.key_query_shared_bottleneck:
            return "shared"
        return "full"

    @property
    def norm(self) -> str:
        return "nonorm" if self.normalization_type == "no_norm" else "layernorm"

    def validate(self) -> None:
        def need(cond: bool, name: str, expected: str) -> None:
            if not cond:
                raise ValueError(f"MobileBertConfig.{name}: expected {expected}, got {getattr(self, name)!r}")

        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size",
                     "embedding_size", "intra_bottleneck_size", "num_feedforward_networks", "num_labels"):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool) and value > 0, name, "a positive int")
        need(self.hidden_act in ACTIVATIONS, "hidden_act", f"one of {ACTIVATIONS}")
        need(self.normalization_type in NORMALIZATIONS, "normalization_type", f"one of {NORMALIZATIONS}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            need(0.0 <= getattr(self, name) < 1.0, name, "a probability in [0, 1)")
        need(self.classifier_dropout is None or 0.0 <= self.classifier_dropout < 1.0,
             "classifier_dropout", "None or a probability in [0, 1)")
        need(self.layer_norm_eps > 0, "layer_norm_eps", "a positive float")
        need(self.true_hidden_size % self.num_attention_heads == 0, "num_attention_heads",
             f"a divisor of the attention width {self.true_hidden_size} "
             f"({'intra_bottleneck_size' if self.use_bottleneck else 'hidden_size'})")
        need(self.pad_token_id is None or 0 <= self.pad_token_id < self.vocab_size, "pad_token_id",
             f"None or an id in [0, vocab_size={self.vocab_size})")
        need(self.embedding_size <= self.hidden_size, "embedding_size",
             f"at most hidden_size={self.hidden_size} (the MLM head's output matrix is the tied "
             "embedding plus hidden_size - embedding_size extra rows)")

    # -- presets (Sun et al., 2020, Table 1 and Google's released configs) --------------------
    @classmethod
    def mobilebert(cls, **overrides: Any) -> MobileBertConfig:
        """The released `google/mobilebert-uncased` architecture (no pooler activation)."""
        return cls(**{"classifier_activation": False, **overrides})

    @classmethod
    def mobilebert_no_opt(cls, **overrides: Any) -> MobileBertConfig:
        """MobileBERT w/o OPT: GELU and LayerNorm instead of ReLU and NoNorm."""
        return cls(**{"classifier_activation": False, "hidden_act": "gelu",
                      "normalization_type": "layer_norm", **overrides})

    @classmethod
    def mobilebert_tiny(cls, **overrides: Any) -> MobileBertConfig:
        """MobileBERT-tiny: two FFNs, Q, K and V all from the input bottleneck."""
        return cls(**{"classifier_activation": False, "num_feedforward_networks": 2,
                      "use_bottleneck_attention": True, **overrides})

    @classmethod
    def ib_bert_large(cls, **overrides: Any) -> MobileBertConfig:
        """The IB-BERT-large teacher: 512-wide interface, 1024 inside, Q/K/V from the 512-wide input."""
        return cls(**{"classifier_activation": False, "intra_bottleneck_size": 1024,
                      "intermediate_size": 4096, "hidden_act": "gelu", "num_feedforward_networks": 1,
                      "key_query_shared_bottleneck": False, "use_bottleneck_attention": False,
                      "normalization_type": "layer_norm", "attention_probs_dropout_prob": 0.1,
                      "hidden_dropout_prob": 0.1, **overrides})

    # -- config.json --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for optional in ("id2label", "quantization_config"):
            if d[optional] is None:
                del d[optional]
        d["model_type"] = "mobilebert"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MobileBertConfig:
        d = dict(d)
        model_type = d.pop("model_type", "mobilebert")
        if model_type != "mobilebert":
            raise ValueError(f"config: expected model_type 'mobilebert', got {model_type!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in d if k not in names and k not in _HF_ONLY_KEYS)
        if unknown:
            raise ValueError(f"config: unknown MobileBertConfig fields {unknown}")
        kwargs = {k: v for k, v in d.items() if k in names}
        if kwargs.get("id2label") is not None:
            kwargs["id2label"] = {int(k): v for k, v in kwargs["id2label"].items()}
            kwargs.setdefault("num_labels", len(kwargs["id2label"]))
        return cls(**kwargs)

    def save(self, folder: str | os.PathLike, architecture: str | None = None) -> None:
        d = self.to_dict()
        if architecture is not None:
            d["architectures"] = [architecture]
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(d, f, indent=2, sort_keys=True)
            f.write("\n")

    @classmethod
    def load(cls, folder: str | os.PathLike) -> MobileBertConfig:
        path = os.path.join(folder, "config.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"folder: expected a config.json in {str(folder)!r}, found none")
        with open(path) as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"config.json in {str(folder)!r} is not valid JSON: {e}") from e
        return cls.from_dict(d)
