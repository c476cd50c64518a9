"""Hugging Face interop: load and save MobileBERT folders (config.json + weights) offline.

A folder written by `transformers`' `save_pretrained` loads here, and a folder written here loads in
`transformers` with no missing keys. Keys move between a backbone and a head model the way HF moves
them (the `mobilebert.` prefix is added or stripped); tied parameters (the MLM decoder) are not
written, as HF does not write them.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import warnings
from typing import Any

import torch

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
    state = _match_prefix(load_state_dict(folder), "mobilebert", set(model.state_dict()))
    own = model.state_dict()
    for key, value in state.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise ValueError(f"checkpoint key {key!r}: expected shape {tuple(own[key].shape)} from config.json, "
                             f"got {tuple(value.shape)} (the config is inconsistent with the weights)")
    result = model.load_state_dict(state, strict=False)
    model.tie_weights()
    missing = [k for k in result.missing_keys if k not in model.tied_keys]
    unexpected = list(result.unexpected_keys)
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
