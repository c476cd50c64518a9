"""MobileBERT as nn.Modules whose parameter names are Hugging Face's state-dict keys.

The submodules below hold parameters under HF's names (`attention.self.query`,
`ffn.0.output.LayerNorm`, …) so checkpoints load with zero missing or unexpected keys; the compute
is three `mbkernels.ops` calls per layer: `bottleneck_attention → ffn_stack → linear_norm`.
"""

from __future__ import annotations

import os
from functools import reduce
from itertools import repeat
from operator import is_

import torch
from torch import nn

from mbkernels import checks, ops
from mbkernels.config import MobileBertConfig
from mbkernels.ops._arguments import ATTENTION_WEIGHTS
from mbkernels.outputs import BaseModelOutputWithPooling

# HF builds these LayerNorms without an eps argument (nn.LayerNorm's default), every other with
# config.layer_norm_eps: embeddings.LayerNorm and the last FFN's output.LayerNorm.
DEFAULT_EPS = 1e-5


class NoNorm(nn.Module):
    """MobileBERT's normalization: `x * weight + bias` (eps is accepted and unused, as in HF)."""

    def __init__(self, feat_size: int, eps: float | None = None):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(feat_size))
        self.weight = nn.Parameter(torch.ones(feat_size))
        self.eps = eps

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return ops.nonorm(x, self.weight, self.bias, residual)


class LayerNorm(nn.Module):
    """LayerNorm with the same parameter names, computed by `ops.layernorm`."""

    def __init__(self, feat_size: int, eps: float = DEFAULT_EPS):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(feat_size))
        self.bias = nn.Parameter(torch.zeros(feat_size))
        self.eps = eps

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return ops.layernorm(x, self.weight, self.bias, residual, self.eps)


def make_norm(config: MobileBertConfig, size: int, eps: float) -> nn.Module:
    return NoNorm(size, eps) if config.normalization_type == "no_norm" else LayerNorm(size, eps)


# -- parameter holders under HF's names (their compute lives in MobileBertLayer.forward) ----------

class _DenseNorm(nn.Module):
    def __init__(self, config: MobileBertConfig, fan_in: int, fan_out: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(fan_in, fan_out)
        self.LayerNorm = make_norm(config, fan_out, eps)


class _Dense(nn.Module):
    def __init__(self, fan_in: int, fan_out: int):
        super().__init__()
        self.dense = nn.Linear(fan_in, fan_out)


class _SelfAttention(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        width = config.true_hidden_size
        # Q and K read a bottleneck unless they read h ("full", "none"); V reads h except in -tiny.
        qk_in = config.hidden_size if config.attention_mode in ("full", "none") else width
        v_in = width if config.attention_mode == "bottleneck" else config.hidden_size
        self.query = nn.Linear(qk_in, width)
        self.key = nn.Linear(qk_in, width)
        self.value = nn.Linear(v_in, width)


class _Attention(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        width = config.true_hidden_size
        self.self = _SelfAttention(config)
        self.output = _DenseNorm(config, width, width, config.layer_norm_eps)


class _Bottleneck(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.input = _DenseNorm(config, config.hidden_size, config.intra_bottleneck_size, config.layer_norm_eps)
        if config.key_query_shared_bottleneck:
            self.attention = _DenseNorm(config, config.hidden_size, config.intra_bottleneck_size,
                                        config.layer_norm_eps)


class _FFN(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        width = config.true_hidden_size
        self.intermediate = _Dense(width, config.intermediate_size)
        self.output = _DenseNorm(config, config.intermediate_size, width, config.layer_norm_eps)


class _Output(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        width = config.true_hidden_size
        self.dense = nn.Linear(config.intermediate_size, width)
        self.LayerNorm = make_norm(config, width, DEFAULT_EPS)
        if config.use_bottleneck:
            self.bottleneck = _DenseNorm(config, width, config.hidden_size, config.layer_norm_eps)


def _weight_paths(config: MobileBertConfig) -> tuple[str | None, ...]:
    """A layer's weights in `ops.encoder`'s order (its attention part is `ops.bottleneck_attention`'s
    WEIGHTS), as paths below the layer; None where the configuration has none. The one spelling of
    the layer's weight list on the Python side."""
    def dense_norm(prefix):
        return (f"{prefix}.dense.weight", f"{prefix}.dense.bias", f"{prefix}.LayerNorm.weight",
                f"{prefix}.LayerNorm.bias")
    absent = (None,) * 4
    paths = [*(dense_norm("bottleneck.input") if config.use_bottleneck else absent),
             *(dense_norm("bottleneck.attention") if config.attention_mode == "shared" else absent)]
    paths += [f"attention.self.{p}.{w}" for p in ("query", "key", "value") for w in ("weight", "bias")]
    paths += dense_norm("attention.output")
    ffns = [f"ffn.{i}." for i in range(config.num_feedforward_networks - 1)] + [""]
    for f in ffns:
        paths += [f"{f}intermediate.dense.weight", f"{f}intermediate.dense.bias", *dense_norm(f"{f}output")]
    paths += dense_norm("output.bottleneck") if config.use_bottleneck else absent
    return tuple(paths)


_ABSENT: dict = {}  # the parameter dict an absent slot reads: every read gives None


class _WeightSlots:
    """Where a layer's weights live: per slot of `_weight_paths`, the owning module's parameter dict
    and the name in it, and every module edge below the layer. Attribute access on an nn.Module is a
    Python call per attribute (3.3 ms per forward for the 1104 weights of 24 layers); reading the
    dicts is not. `read()` returns the weights, or None when the slots no longer describe the layer:
    a submodule was replaced, or a weight appeared or went (e.g. a parametrization moved it)."""

    __slots__ = ("dicts", "names", "absent", "edge_dicts", "edge_names", "edge_children", "direct")

    def __init__(self, layer: nn.Module, paths: tuple[str | None, ...]):
        self.dicts, self.names, self.direct = [], [], True
        for path in paths:
            if path is None:
                self.dicts.append(_ABSENT)
                self.names.append("")
                continue
            owner_path, _, name = path.rpartition(".")
            owner = layer.get_submodule(owner_path)
            self.dicts.append(owner._parameters)
            self.names.append(name)
            # A parametrized weight (or any attribute that is not the registered parameter) is read
            # through attribute access every call.
            self.direct &= owner._parameters.get(name, _ABSENT) is getattr(owner, name)
        edges = [(m._modules, n, c) for m in layer.modules() for n, c in m._modules.items()]
        self.edge_dicts, self.edge_names, self.edge_children = (list(e) for e in zip(*edges)) if edges else ([], [], [])
        self.absent = list(map(is_, self._read(), repeat(None)))

    def _read(self) -> list:
        return list(map(dict.get, self.dicts, self.names))

    def read(self) -> list | None:
        if not all(map(is_, map(dict.get, self.edge_dicts, self.edge_names), self.edge_children)):
            return None
        got = self._read()
        return got if list(map(is_, got, repeat(None))) == self.absent else None


# -- the model --------------------------------------------------------------------------------------

class MobileBertEmbeddings(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.embedding_size,
                                            padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        fan_in = config.embedding_size * (3 if config.trigram_input else 1)
        self.embedding_transformation = nn.Linear(fan_in, config.hidden_size)
        self.LayerNorm = make_norm(config, config.hidden_size, DEFAULT_EPS)
        self.register_buffer("position_ids", torch.arange(config.max_position_embeddings)[None], persistent=False)

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None):
        c = self.config
        shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:-1]
        if position_ids is None:
            position_ids = self.position_ids[:, : shape[1]]
        if token_type_ids is None:
            token_type_ids = torch.zeros(shape, dtype=torch.long, device=self.position_ids.device)
        transform = c.trigram_input or c.embedding_size != c.hidden_size
        with checks.site("embeddings"):
            out = ops.embedding(
                input_ids, inputs_embeds, token_type_ids, position_ids, self.word_embeddings.weight,
                self.embedding_transformation.weight if transform else None,
                self.embedding_transformation.bias if transform else None,
                self.position_embeddings.weight, self.token_type_embeddings.weight,
                self.LayerNorm.weight, self.LayerNorm.bias, padding_idx=c.pad_token_id, trigram=c.trigram_input,
                norm=c.norm, eps=DEFAULT_EPS, dropout_p=c.hidden_dropout_prob if self.training else 0.0)
        return out


class MobileBertLayer(nn.Module):
    """One block: `bottleneck_attention → ffn_stack → linear_norm(residual=h)`."""

    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.config = config
        self.attention = _Attention(config)
        self.intermediate = _Dense(config.true_hidden_size, config.intermediate_size)
        self.output = _Output(config)
        if config.use_bottleneck:
            self.bottleneck = _Bottleneck(config)
        if config.num_feedforward_networks > 1:
            self.ffn = nn.ModuleList([_FFN(config) for _ in range(config.num_feedforward_networks - 1)])
        self.check_site = "layer"  # how finite checks name it; the encoder gives its index and path

    def forward(self, hidden_states: torch.Tensor, key_mask: torch.Tensor | None = None,
                return_scores: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        with checks.site(self.check_site):
            return self._forward(hidden_states, key_mask, return_scores)

    def _forward(self, hidden_states, key_mask, return_scores):
        c = self.config
        mode = c.attention_mode
        training = self.training
        w = self.weights()
        a, scores = ops.bottleneck_attention(
            hidden_states, key_mask, *w[:ATTENTION_WEIGHTS],
            num_heads=c.num_attention_heads, mode=mode, norm=c.norm, eps=c.layer_norm_eps,
            attn_dropout_p=c.attention_probs_dropout_prob if training else 0.0,
            hidden_dropout_p=c.hidden_dropout_prob if training and mode == "none" else 0.0,
            return_scores=return_scores)
        n = c.num_feedforward_networks
        ffn = w[ATTENTION_WEIGHTS:ATTENTION_WEIGHTS + 6 * n]  # per FFN [W1, b1, W2, b2, norm weight, norm bias]
        a = ops.ffn_stack(
            a, *(ffn[j::6] for j in range(6)),
            act=c.hidden_act, norm=c.norm, eps=[c.layer_norm_eps] * (n - 1) + [DEFAULT_EPS],
            dropout_p=c.hidden_dropout_prob if training and not c.use_bottleneck else 0.0)
        if c.use_bottleneck:
            a = ops.linear_norm(a, *w[-4:], residual=hidden_states, norm=c.norm,
                                eps=c.layer_norm_eps, dropout_p=c.hidden_dropout_prob if training else 0.0)
        return a, scores

    def weights(self) -> list[torch.Tensor | None]:
        """This layer's weights in `ops.encoder`'s order (`_weight_paths`), None where absent."""
        slots = self.__dict__.get("_weight_slots")
        got = slots.read() if slots is not None else None
        if got is None:
            slots = _WeightSlots(self, _weight_paths(self.config))
            self.__dict__["_weight_slots"] = slots  # not a submodule or parameter: past nn.Module's setattr
            got = slots.read()
        if not slots.direct:
            return [None if p is None else reduce(getattr, p.split("."), self) for p in _weight_paths(self.config)]
        return got

    def attention_weights(self) -> list[torch.Tensor | None]:
        """The attention block's weights in `ops.bottleneck_attention`'s order (its `WEIGHTS`), None
        where the mode has none."""
        return self.weights()[:ATTENTION_WEIGHTS]

    def encoder_weights(self, empty: torch.Tensor) -> list[torch.Tensor]:
        """This layer's weights in `ops.encoder`'s order (`empty` where one is absent)."""
        return [empty if t is None else t for t in self.weights()]


class MobileBertEncoder(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.layer = nn.ModuleList([MobileBertLayer(config) for _ in range(config.num_hidden_layers)])
        for i, layer in enumerate(self.layer):
            layer.check_site = f"layer {i} (encoder.layer.{i})"

    def forward(self, hidden_states, key_mask=None, output_hidden_states=False, output_scores=False):
        """Returns (last hidden state, all hidden states incl. the input or None, scores or None)."""
        if self._one_op(hidden_states, output_hidden_states or output_scores):
            return self._encoder_op(hidden_states, key_mask), None, None
        all_hidden = [hidden_states] if output_hidden_states else None
        all_scores = [] if output_scores else None
        for layer in self.layer:
            hidden_states, scores = layer(hidden_states, key_mask, return_scores=output_scores)
            if output_hidden_states:
                all_hidden.append(hidden_states)
            if output_scores:
                all_scores.append(scores)
        return (hidden_states, tuple(all_hidden) if all_hidden is not None else None,
                tuple(all_scores) if all_scores is not None else None)

    def _one_op(self, hidden_states, per_layer_outputs: bool) -> bool:
        """Whether inference runs all layers as one `ops.encoder` call (one kernel call instead of 3 op
        calls per layer; the op decides which kernel runs): nothing needs gradients, per-layer outputs
        or finite checks named per layer."""
        return (not self.training and not per_layer_outputs and not torch.is_grad_enabled()
                and not checks.active() and len(self.layer) > 0)

    def _encoder_op(self, hidden_states, key_mask):
        c = self.layer[0].config
        empty = hidden_states.new_empty(0)
        weights = [t for layer in self.layer for t in layer.encoder_weights(empty)]
        return ops.encoder(hidden_states, key_mask, weights, len(self.layer), c.num_attention_heads,
                           c.attention_mode, c.norm, c.hidden_act, c.layer_norm_eps,
                           [c.layer_norm_eps] * (c.num_feedforward_networks - 1) + [DEFAULT_EPS], c.use_bottleneck)


class MobileBertPooler(nn.Module):
    def __init__(self, config: MobileBertConfig):
        super().__init__()
        self.do_activate = config.classifier_activation
        if self.do_activate:
            self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        first = hidden_states[:, 0]
        return torch.tanh(self.dense(first)) if self.do_activate else first


class MobileBertPreTrainedModel(nn.Module):
    """Weight initialisation as HF's, and HF-format `from_pretrained` / `save_pretrained`."""

    base_model_prefix = "mobilebert"
    # Keys that alias another parameter (tied); HF omits them from saved files.
    tied_keys: tuple[str, ...] = ()

    def __init__(self, config: MobileBertConfig):
        super().__init__()
        if not isinstance(config, MobileBertConfig):
            raise TypeError(f"config: expected a mbkernels.MobileBertConfig, got {type(config).__name__}")
        self.config = config

    def init_weights(self) -> None:
        std = self.config.initializer_range
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    m.weight.normal_(0.0, std)
                    if m.bias is not None:
                        m.bias.zero_()
                elif isinstance(m, nn.Embedding):
                    m.weight.normal_(0.0, std)
                    if m.padding_idx is not None:
                        m.weight[m.padding_idx].zero_()
                elif isinstance(m, (NoNorm, LayerNorm, nn.LayerNorm)):
                    m.weight.fill_(1.0)
                    m.bias.zero_()
            for name, p in self.named_parameters():
                if name.endswith("cls.predictions.bias"):
                    p.zero_()
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share tied parameters (the MLM decoder with the word embeddings); heads override."""

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, config: MobileBertConfig | None = None,
                        strict: bool = False, output_loading_info: bool = False, **config_overrides):
        from mbkernels import hf

        return hf.from_pretrained(cls, folder, config=config, strict=strict,
                                  output_loading_info=output_loading_info, **config_overrides)

    def save_pretrained(self, folder: str | os.PathLike, safe_serialization: bool = True) -> None:
        from mbkernels import hf

        hf.save_pretrained(self, folder, safe_serialization=safe_serialization)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())


def key_mask_from(attention_mask: torch.Tensor | None, shape: torch.Size,
                  device: torch.device | None = None) -> torch.Tensor | None:
    """HF-style [B, S] mask (float, int or bool; 1 = attend) → bool key mask, validated."""
    if attention_mask is None:
        return None
    if device is not None and attention_mask.device != device:
        raise ValueError(f"attention_mask: expected a tensor on {device} (the model's device), "
                         f"got {attention_mask.device}")
    if attention_mask.dtype.is_complex:
        raise TypeError(f"attention_mask: expected a float, integer or bool tensor of 0/1, got {attention_mask.dtype}")
    if tuple(attention_mask.shape) != tuple(shape):
        raise ValueError(f"attention_mask: expected shape {tuple(shape)} (as input_ids), "
                         f"got {tuple(attention_mask.shape)}")
    if attention_mask.dtype == torch.bool:
        return attention_mask
    if torch.compiler.is_compiling():  # torch.export / torch.compile cannot branch on values: eager check only
        return attention_mask != 0
    bad = (attention_mask != 0) & (attention_mask != 1)
    if bool(bad.any()):
        raise ValueError(f"attention_mask: expected values 0 or 1, got {attention_mask[bad][0].item()!r}")
    return attention_mask != 0


def _check_ids(name: str, ids: torch.Tensor | None, shape, high: int, device) -> None:
    if ids is None:
        return
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"{name}: expected an integer tensor (torch.long), got {ids.dtype}")
    if shape is not None and tuple(ids.shape) != tuple(shape) and not (name == "position_ids" and ids.shape[0] == 1):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(ids.shape)}")
    if ids.device != device:
        raise ValueError(f"{name}: expected a tensor on {device} (the model's device), got {ids.device}")
    if ids.numel() and not torch.compiler.is_compiling():
        lo, hi = (int(v) for v in torch.aminmax(ids))  # one pass, one sync
        if lo < 0 or hi >= high:
            raise ValueError(f"{name}: expected values in [0, {high}), got min {lo}, max {hi}")


class MobileBertModel(MobileBertPreTrainedModel):
    """The MobileBERT backbone: embeddings, encoder, pooler (HF's `MobileBertModel`)."""

    base_model_prefix = ""

    def __init__(self, config: MobileBertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = MobileBertEmbeddings(config)
        self.encoder = MobileBertEncoder(config)
        self.pooler = MobileBertPooler(config) if add_pooling_layer else None
        self.init_weights()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, output_hidden_states=False, output_attentions=False,
                output_attention_scores=False, return_dict=True) -> BaseModelOutputWithPooling:
        c = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("input_ids / inputs_embeds: expected exactly one of them, got "
                             f"{'both' if input_ids is not None else 'neither'}")
        device = self.embeddings.position_ids.device
        if input_ids is not None:
            _check_ids("input_ids", input_ids, None, c.vocab_size, device)
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids: expected shape [batch, sequence], got {tuple(input_ids.shape)}")
            shape = input_ids.shape
        else:
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != c.embedding_size:
                raise ValueError(f"inputs_embeds: expected shape [batch, sequence, {c.embedding_size}], "
                                 f"got {tuple(inputs_embeds.shape)}")
            shape = inputs_embeds.shape[:2]
        if shape[1] == 0:
            raise ValueError("input_ids: expected a sequence of at least 1 token, got length 0")
        if shape[1] > c.max_position_embeddings:
            raise ValueError(f"input_ids: expected at most max_position_embeddings={c.max_position_embeddings} "
                             f"tokens, got a sequence of {shape[1]}")
        _check_ids("token_type_ids", token_type_ids, shape, c.type_vocab_size, device)
        _check_ids("position_ids", position_ids, shape, c.max_position_embeddings, device)
        key_mask = key_mask_from(attention_mask, shape, device)

        want_scores = output_attentions or output_attention_scores
        with checks.model_forward(self.embeddings.word_embeddings.weight):  # float16: one check at the end
            h = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
            h, hidden, scores = self.encoder(h, key_mask, output_hidden_states, want_scores)
        pooled = self.pooler(h) if self.pooler is not None else None
        probs = tuple(torch.softmax(s, dim=-1) for s in scores) if output_attentions else None
        out = BaseModelOutputWithPooling(h, pooled, hidden, probs, scores if output_attention_scores else None)
        return out if return_dict else out.to_tuple()
