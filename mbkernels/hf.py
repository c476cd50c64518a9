"""Hugging Face interop: load and save MobileBERT folders offline, convert live model objects.

A folder written by `transformers`' `save_pretrained` loads here, and a folder written here loads in
`transformers` with no missing keys. Keys move between a backbone and a head model the way HF moves
them (the `mobilebert.` prefix is added or stripped); tied parameters (the MLM decoder) are not
written, as HF does not write them.

`from_hf(model)` / `to_hf(model)` convert a model object in memory to the class of the same name on
the other side. By default the weights are copied (the two models are independent); with
`share=True` the new model holds the very same Parameter objects (no memory, and training either
one trains both). Patching an HF model in place instead of converting it is `mbkernels.patch_hf`.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import warnings
from typing import Any

import torch

from torch import nn

from mbkernels.config import MobileBertConfig

SAFETENSORS_NAME = "model.safetensors"
PYTORCH_NAME = "pytorch_model.bin"


def load_state_dict(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights in `folder` (model.safetensors preferred, else pytorch_model.bin), on CPU."""
    st_path = os.path.join(folder, SAFETENSORS_NAME)
    pt_path = os.path.join(folder, PYTORCH_NAME)
    if os.path.isfile(st_path):
        from safetensors.torch import load_file

        try:
            return load_file(st_path)
        except Exception as e:  # safetensors raises its own error types for truncation/corruption
            raise ValueError(f"checkpoint {st_path!r}: expected a valid safetensors file, could not read it "
                             f"({type(e).__name__}: {e})") from e
    if os.path.isfile(pt_path):
        try:
            return torch.load(pt_path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"checkpoint {pt_path!r}: expected a valid PyTorch state dict, could not read it "
                             f"({type(e).__name__}: {e})") from e
    raise FileNotFoundError(f"folder: expected {SAFETENSORS_NAME} or {PYTORCH_NAME} in {str(folder)!r}, "
                            "found neither")


def _match_prefix(state: dict[str, torch.Tensor], prefix: str, expected: set[str]) -> dict[str, torch.Tensor]:
    """Add or strip the backbone prefix so the checkpoint's keys line up with the model's."""
    p = prefix + "."
    ours_prefixed = any(k.startswith(p) for k in expected)
    theirs_prefixed = any(k.startswith(p) for k in state)
    if ours_prefixed and not theirs_prefixed:
        return {p + k: v for k, v in state.items()}
    if theirs_prefixed and not ours_prefixed:
        return {(k[len(p):] if k.startswith(p) else k): v for k, v in state.items()}
    return state


def from_pretrained(cls, folder: str | os.PathLike, config: MobileBertConfig | None = None, strict: bool = False,
                    output_loading_info: bool = False, **config_overrides: Any):
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"folder: expected a directory with config.json and weights, got {str(folder)!r}")
    config = config if config is not None else MobileBertConfig.load(folder)
    if config_overrides:
        config = dataclasses.replace(config, **config_overrides)
    model = cls(config)
    if config.quantization_config is not None:
        from mbkernels.quantize import prepare_for_loading

        prepare_for_loading(model, config.quantization_config)
    state = _match_prefix(load_state_dict(folder), "mobilebert", set(model.state_dict()))
    own = model.state_dict()
    for key, value in state.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise ValueError(f"checkpoint key {key!r}: expected shape {tuple(own[key].shape)} from config.json, "
                             f"got {tuple(value.shape)} (the config is inconsistent with the weights)")
        if key in own and (own[key].dtype == torch.int8) != (value.dtype == torch.int8):
            raise ValueError(f"checkpoint key {key!r}: expected {own[key].dtype} (config.json's "
                             f"quantization_config), got {value.dtype}")
    result = model.load_state_dict(state, strict=False)
    model.tie_weights()
    missing = [k for k in result.missing_keys if k not in model.tied_keys]
    unexpected = list(result.unexpected_keys)
    int8_missing = [k for k in missing if own[k].dtype == torch.int8 or k.endswith(("weight_scale", "input_smooth"))]
    if int8_missing:
        raise ValueError(f"loading {cls.__name__} from {str(folder)!r}: config.json's quantization_config names "
                         f"int8 weights the checkpoint lacks: {int8_missing[:5]}")
    if config.quantization_config is not None:
        from mbkernels.quantize import check_loaded

        check_loaded(model)
    info = {"missing_keys": missing, "unexpected_keys": unexpected}
    if missing or unexpected:
        message = (f"loading {cls.__name__} from {str(folder)!r}: missing keys {missing} "
                   f"(left at their initial values), unexpected keys {unexpected} (ignored)")
        if strict:
            raise ValueError(message)
        warnings.warn(message, stacklevel=3)
    model.eval()
    return (model, info) if output_loading_info else model


def save_pretrained(model, folder: str | os.PathLike, safe_serialization: bool = True) -> None:
    """Write config.json and the weights; each file appears whole or not at all (write + rename)."""
    os.makedirs(folder, exist_ok=True)
    model.config.save(folder, architecture=type(model).__name__)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
             if k not in model.tied_keys}
    name = SAFETENSORS_NAME if safe_serialization else PYTORCH_NAME
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    try:
        if safe_serialization:
            from safetensors.torch import save_file

            save_file(state, tmp, metadata={"format": "pt"})
        else:
            torch.save(state, tmp)
        os.replace(tmp, os.path.join(folder, name))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# -- live model objects ----------------------------------------------------------------------------

# The classes that exist on both sides under the same name (HF's MobileBertForMultipleChoice has no
# counterpart here).
CLASS_NAMES = ("MobileBertModel", "MobileBertForPreTraining", "MobileBertForMaskedLM",
               "MobileBertForNextSentencePrediction", "MobileBertForSequenceClassification",
               "MobileBertForTokenClassification", "MobileBertForQuestionAnswering")


def from_hf_config(hf_config) -> MobileBertConfig:
    """Our config from a `transformers.MobileBertConfig` (its architecture fields; bookkeeping dropped).

    Raises ValueError naming the field when the architecture is one mbkernels does not run (an
    activation other than relu/gelu, a callable activation, ...)."""
    d = hf_config.to_dict()
    names = {f.name for f in dataclasses.fields(MobileBertConfig)}
    if d.get("model_type", "mobilebert") != "mobilebert":
        raise ValueError(f"config: expected a MobileBERT config (model_type 'mobilebert'), got {d.get('model_type')!r}")
    d = {k: v for k, v in d.items() if k in names}
    labels = d.get("id2label") or {}
    if labels and {int(k): v for k, v in labels.items()} == {i: f"LABEL_{i}" for i in range(len(labels))}:
        del d["id2label"]  # HF's placeholder names are our None; HF keeps the label count only there
        d["num_labels"] = len(labels)
    return MobileBertConfig.from_dict(d)


def to_hf_config(config: MobileBertConfig, attn_implementation: str | None = None):
    """The `transformers.MobileBertConfig` of the same architecture.

    Raises ValueError for the one architecture transformers cannot build: a bottleneck with Q, K, V
    taken from the full-width input (IB-BERT, `attention_mode == "full"`) at differing widths."""
    import transformers

    if config.attention_mode == "full" and config.intra_bottleneck_size != config.hidden_size:
        raise ValueError("config: transformers cannot build a bottleneck whose Q, K, V read the "
                         f"{config.hidden_size}-wide input while the attention is {config.intra_bottleneck_size} wide "
                         "(the IB-BERT teacher: key_query_shared_bottleneck=False, use_bottleneck_attention=False); "
                         "expected a MobileBERT-style config")
    d = config.to_dict()
    d.pop("model_type")
    hf_config = transformers.MobileBertConfig(**d)
    if attn_implementation is not None:
        hf_config._attn_implementation = attn_implementation
    return hf_config


def _counterpart(model: nn.Module, module) -> type:
    """The class named like `model`'s in `module` (mbkernels or transformers), or TypeError."""
    name = type(model).__name__
    if name not in CLASS_NAMES:
        raise TypeError(f"model: expected one of {', '.join(CLASS_NAMES)}, got {name}")
    return getattr(module, name)


def _transfer(src: nn.Module, dst: nn.Module, share: bool) -> None:
    """Give `dst` (built on the meta device, same names) `src`'s parameters and buffers: the same
    objects (`share`) or copies. Aliases stay aliases: a tied parameter maps to one new tensor."""
    new: dict[int, torch.Tensor] = {}
    entries = [*src.named_parameters(remove_duplicate=False), *src.named_buffers(remove_duplicate=False)]
    dst_names = {n for n, _ in dst.named_parameters(remove_duplicate=False)}
    dst_names |= {n for n, _ in dst.named_buffers(remove_duplicate=False)}
    missing = dst_names - {n for n, _ in entries}
    unexpected = {n for n, _ in entries} - dst_names
    if missing or unexpected:
        raise ValueError(f"model: expected the parameter names of {type(dst).__name__}, got "
                         f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    for name, tensor in entries:
        owner_name, _, leaf = name.rpartition(".")
        owner = dst.get_submodule(owner_name)
        if id(tensor) not in new:
            if share:
                new[id(tensor)] = tensor
            elif isinstance(tensor, nn.Parameter):
                new[id(tensor)] = nn.Parameter(tensor.detach().clone(), requires_grad=tensor.requires_grad)
            else:
                new[id(tensor)] = tensor.detach().clone()
        if leaf in owner._parameters:
            owner._parameters[leaf] = new[id(tensor)]
        else:
            owner._buffers[leaf] = new[id(tensor)]


def from_hf(model: nn.Module, share: bool = False) -> nn.Module:
    """The mbkernels model of the same class as the transformers `model`, with its weights copied
    (or, with `share=True`, the same Parameter objects), in the same train/eval mode."""
    import mbkernels

    cls = _counterpart(model, mbkernels)
    with torch.device("meta"):
        ours = cls(from_hf_config(model.config))
    _transfer(model, ours, share)
    return ours.train(model.training)


def to_hf(model: nn.Module, share: bool = False, attn_implementation: str | None = None) -> nn.Module:
    """The transformers model of the same class as the mbkernels `model`, with its weights copied
    (or, with `share=True`, the same Parameter objects), in the same train/eval mode.
    `attn_implementation` ("eager", "sdpa", ...) defaults to transformers' own choice; HF returns
    attention probabilities only with "eager"."""
    import transformers

    cls = _counterpart(model, transformers)
    if model.config.quantization_config is not None:
        raise ValueError("model: expected a float32 model, got an int8-quantized one (transformers cannot run "
                         "mbkernels' int8 Linears)")
    hf_config = to_hf_config(model.config, attn_implementation)
    with torch.device("meta"):
        theirs = cls(hf_config)
    _transfer(model, theirs, share)
    return theirs.train(model.training)
