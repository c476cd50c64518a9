"""Patch one transformers MobileBERT instance in place so that it runs on mbkernels' fused ops.

`patch_hf(model)` rebinds `forward` on the instances inside `model` (never on their classes, so a
teacher and a student in one process stay independent):

- `embeddings` and each `encoder.layer[i]` run mbkernels' `MobileBertEmbeddings` / `MobileBertLayer`
  forward (`ops.embedding`; `bottleneck_attention → ffn_stack → linear_norm`) through a *view*: an
  instance of our class that holds the HF module's own submodule, parameter and buffer dicts (HF's
  names are ours), so the ops read the HF model's Parameter objects at every call: gradients land in
  them, and `.to()`, `load_state_dict` and optimizers work unchanged;
- `encoder` turns HF's prepared attention mask into one `[B, S]` key mask, once per forward, and
  calls its layers as HF does (their forward hooks, e.g. HF's `output_hidden_states` capture, run;
  HF's gradient checkpointing applies when enabled); in inference with nothing observing the layers
  (no gradients, no per-layer outputs requested, no hooks on them) it runs mbkernels' encoder
  instead (on CPU fp32 one `ops.encoder` call for all layers);
- each `layer.attention.self` keeps HF's forward for direct calls; the fused layer calls it only to
  hand over the attention probabilities it computed, so HF's `output_attentions` capture (a hook on
  that module) and user hooks see them.

Dropout probabilities come from the config (HF builds its Dropout modules from the same fields); the
masks differ from HF's (another random stream), and with attention dropout on, `output_attentions`
returns the probabilities before dropout (HF's eager attention returns them after). With HF's "sdpa"
attention (its default) HF returns no attention probabilities; a patched model returns them.

Patching a patched model changes nothing; `unpatch_hf` removes exactly what `patch_hf` added (the
instance `forward`s and views), so the model behaves bit for bit as before.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mbkernels import hf, modeling


def _hf_classes():
    from transformers.models.mobilebert import modeling_mobilebert

    return modeling_mobilebert


def key_mask_of(attention_mask, shape: torch.Size) -> torch.Tensor | None:
    """The `[B, S]` bool key mask (True = attend) of any mask HF hands a layer: None, a 2D 0/1 or bool
    mask, or a prepared 4D `[B|1, 1|H, S, S]` mask (bool, or additive float: 0 attend, ≤ -1e4 masked)
    that is the same for every query and head. Other masks raise ValueError."""
    if attention_mask is None:
        return None
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask: expected a tensor or None (attn_implementation 'eager' or 'sdpa'), "
                        f"got {type(attention_mask).__name__}")
    if attention_mask.dim() == 2:
        return modeling.key_mask_from(attention_mask, shape)
    batch, seq = shape
    if attention_mask.dim() != 4 or attention_mask.shape[-2:] != (seq, seq) or attention_mask.shape[0] not in (1, batch):
        raise ValueError(f"attention_mask: expected shape [{batch}, {seq}] or [{batch}, 1, {seq}, {seq}], "
                         f"got {tuple(attention_mask.shape)}")
    if attention_mask.dtype == torch.bool:
        attend = attention_mask
    else:
        attend = attention_mask == 0
        if not torch.compiler.is_compiling() and not bool((attend | (attention_mask <= -1e4)).all()):
            raise ValueError("attention_mask: expected an additive mask of 0 (attend) and large negative values "
                             "(masked); the fused attention takes no other bias")
    first = attend[:, :1, :1, :]
    if not torch.compiler.is_compiling() and not bool((attend == first).all()):
        raise ValueError("attention_mask: expected a padding mask (the same keys for every query and head); "
                         "the fused attention takes one key mask per sequence")
    return first.reshape(attention_mask.shape[0], seq).expand(batch, seq)


# -- the forwards bound onto HF instances ----------------------------------------------------------------

# The HF module's twin of mbkernels' class, sharing its submodules, parameters and buffers (see _view).
_VIEW = "_mbkernels_view"


def _run_view(module, *args, **kwargs):
    view = module.__dict__[_VIEW]
    view.training = module.training
    return view(*args, **kwargs)


def _embeddings_forward(embeddings, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None):
    return _run_view(embeddings, input_ids, token_type_ids, position_ids, inputs_embeds)


def _encoder_forward(encoder, hidden_states, attention_mask=None, **kwargs):
    from transformers.modeling_outputs import BaseModelOutput

    key_mask = key_mask_of(attention_mask, hidden_states.shape[:2])
    if _inference_only(encoder, kwargs):
        # Nothing observes the layers one by one: mbkernels' encoder runs them (one ops.encoder call
        # on CPU fp32, else op by op through the layer views).
        for layer in encoder.layer:
            layer.__dict__[_VIEW].training = layer.training
        return BaseModelOutput(last_hidden_state=_run_view(encoder, hidden_states, key_mask)[0])
    for layer in encoder.layer:
        hidden_states = layer(hidden_states, key_mask, **kwargs)
    return BaseModelOutput(last_hidden_state=hidden_states)


# HF's output-capture hooks (installed once, for good) record only while outputs are requested.
_HF_CAPTURE = "transformers.utils.output_capturing"


def _inference_only(encoder, kwargs) -> bool:
    """No gradients, no per-layer outputs requested (HF's rule: kwarg, else config) and no hooks on the
    layers but HF's idle capture hooks: the layers need not run as HF modules."""
    if torch.is_grad_enabled() or not len(encoder.layer):
        return False
    config = encoder.layer[0].attention.self.config
    if any(kwargs.get(f"output_{k}", getattr(config, f"output_{k}", False)) for k in ("hidden_states", "attentions")):
        return False
    return not any(getattr(hook, "__module__", None) != _HF_CAPTURE
                   for m in encoder.layer for hooks in (m._forward_hooks, m._forward_pre_hooks) for hook in hooks.values())


def _layer_forward(layer, hidden_states, attention_mask=None, **kwargs):
    if layer.gradient_checkpointing and layer.training:  # what HF's GradientCheckpointingLayer does
        return layer._gradient_checkpointing_func(lambda h, m: _fused_layer(layer, h, m, **kwargs),
                                                  hidden_states, attention_mask)
    return _fused_layer(layer, hidden_states, attention_mask, **kwargs)


def _fused_layer(layer, hidden_states, attention_mask=None, **kwargs):
    self_attention = layer.attention.self
    # HF's own rule for "are attentions captured" (transformers' capture_outputs): kwarg, else config.
    report = bool(kwargs.get("output_attentions", getattr(self_attention.config, "output_attentions", False)))
    key_mask = key_mask_of(attention_mask, hidden_states.shape[:2])
    out, scores = _run_view(layer, hidden_states, key_mask, return_scores=report)
    if report:
        self_attention(None, probabilities=torch.softmax(scores, dim=-1))
    return out


def _self_attention_forward(module, *args, probabilities=None, **kwargs):
    """HF's forward for direct calls; from the fused layer, `(None, probabilities)` (no context tensor
    exists there) so the hooks on this module record what HF's eager attention would return."""
    if probabilities is None:
        return type(module).forward(module, *args, **kwargs)
    return None, probabilities


class _BoundForward:
    """`function` bound to one module as its instance `forward`; unlike a bound method of a function
    that is not the module's attribute, it pickles (torch.save of a whole patched model)."""

    def __init__(self, function, module: nn.Module):
        self.function, self.module = function, module

    def __call__(self, *args, **kwargs):
        return self.function(self.module, *args, **kwargs)


# -- patch / unpatch -----------------------------------------------------------------------------------

# Where patch_hf lists, on the backbone, the modules it patched (unpatch_hf restores exactly those).
_RECORD = "_mbkernels_patch"


def _backbones(model) -> list[nn.Module]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module holding a transformers MobileBertModel, "
                        f"got {type(model).__name__}")
    found = [m for m in model.modules() if isinstance(m, _hf_classes().MobileBertModel)]
    if not found:
        raise TypeError(f"model: expected a transformers MobileBert* model (or a module holding one), got "
                        f"{type(model).__name__} with no transformers MobileBertModel inside")
    return found


def _view(theirs: nn.Module, mine: nn.Module) -> nn.Module:
    """`mine` (mbkernels' module, built on the meta device) made to hold `theirs`' submodules,
    parameters and buffers: the very dicts, so it sees every later change (`.to()`, a replaced
    submodule, loaded weights). Its own class, attributes and methods (the forward) stay ours."""
    for store in ("_modules", "_parameters", "_buffers"):
        mine.__dict__[store] = theirs.__dict__[store]
    return mine


def _plan(backbone, ours) -> list[tuple[nn.Module, Callable, nn.Module | None]]:
    """(HF module, forward to bind, its mbkernels view or None) for every module patch_hf touches.
    The views are made here but bound only by patch_hf, after every check has passed."""
    plan = [(backbone.embeddings, _embeddings_forward, _view(backbone.embeddings, ours.embeddings)),
            (backbone.encoder, _encoder_forward, ours.encoder)]  # its layers: the layer views below
    for theirs, mine in zip(backbone.encoder.layer, ours.encoder.layer, strict=True):
        plan += [(theirs, _layer_forward, _view(theirs, mine)), (theirs.attention.self, _self_attention_forward, None)]
    return plan


def _reference_model(backbone) -> modeling.MobileBertModel:
    """mbkernels' model of the backbone's config, on the meta device (no memory), after checking that
    the backbone has exactly its parameters (names and shapes): a model edited after construction
    (pruned heads, resized layers) or an unsupported config is refused, not misread."""
    try:
        config = hf.from_hf_config(backbone.config)
    except ValueError as e:
        raise ValueError(f"model: its config is not one mbkernels runs: {e}") from e
    with torch.device("meta"):
        ours = modeling.MobileBertModel(config, add_pooling_layer=backbone.pooler is not None)
    expected = {k: tuple(v.shape) for k, v in ours.named_parameters()}
    got = {k: tuple(v.shape) for k, v in backbone.named_parameters()}
    if expected != got:
        diff = sorted(set(expected.items()) ^ set(got.items()))[:4]
        raise ValueError(f"model: expected the parameters its config describes, got differences {diff}")
    return ours


def is_patched(model: nn.Module) -> bool:
    """Whether patch_hf has patched the transformers MobileBertModel(s) inside `model`."""
    return all(_RECORD in b.__dict__ for b in _backbones(model))


def patch_hf(model: nn.Module) -> nn.Module:
    """Make this transformers MobileBert* instance (or every MobileBertModel inside `model`) run its
    embeddings and layers on mbkernels' ops, in place; returns `model`. Its class, its weights, its
    outputs (hidden states, attention probabilities, losses) and training stay as they were.
    Patching a patched model changes nothing."""
    for backbone in _backbones(model):
        if _RECORD in backbone.__dict__:
            continue
        plan = _plan(backbone, _reference_model(backbone))
        for module, _, _ in plan:
            if "forward" in module.__dict__:
                raise ValueError(f"model: expected {type(module).__name__} with its class's forward, got an "
                                 "instance attribute `forward` set by someone else (patch_hf replaces it)")
        for module, forward, mine in plan:
            if mine is not None:
                module.__dict__[_VIEW] = mine
            module.forward = _BoundForward(forward, module)
        backbone.__dict__[_RECORD] = [module for module, _, _ in plan]
    return model


def unpatch_hf(model: nn.Module) -> nn.Module:
    """Undo `patch_hf` on `model`: the instance attributes it added are removed; returns `model`."""
    patched = [b for b in _backbones(model) if _RECORD in b.__dict__]
    if not patched:
        raise ValueError(f"model: expected a model patched by mbkernels.patch_hf, got an unpatched "
                         f"{type(model).__name__}")
    for backbone in patched:
        for module in backbone.__dict__.pop(_RECORD):
            del module.forward
            module.__dict__.pop(_VIEW, None)
    return model


__all__ = ["patch_hf", "unpatch_hf", "is_patched", "key_mask_of"]
