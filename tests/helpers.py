"""Shared builders for the tests: small configs, HF twins, inputs with padding."""

from __future__ import annotations

import dataclasses

import torch

from mbkernels import MobileBertConfig


def small(config: MobileBertConfig, **overrides) -> MobileBertConfig:
    """The same architecture with few layers and a small vocabulary, for fast tests."""
    return dataclasses.replace(config, **{"num_hidden_layers": 2, "vocab_size": 1000, **overrides})


def hf_config(config: MobileBertConfig):
    from mbkernels.hf import to_hf_config

    return to_hf_config(config, attn_implementation="eager")  # HF returns attention probabilities only in eager mode


def hf_twin(ours: torch.nn.Module, hf_class_name: str):
    """The transformers model of the same class holding a copy of our weights."""
    import transformers

    theirs = getattr(transformers, hf_class_name)(hf_config(ours.config))
    result = theirs.load_state_dict(ours.state_dict(), strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    assert not [k for k in result.missing_keys if k not in ours.tied_keys], result.missing_keys
    return theirs.to(next(ours.parameters()).dtype).train(ours.training)


def padded_batch(config: MobileBertConfig, batch: int = 3, seq: int = 11, seed: int = 0):
    """ids, token types and a float 0/1 mask with right padding of different lengths per row."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, config.vocab_size, (batch, seq), generator=g)
    types = torch.zeros(batch, seq, dtype=torch.long)
    types[:, seq // 2:] = 1 % config.type_vocab_size
    mask = torch.ones(batch, seq)
    for b in range(1, batch):
        n = max(1, seq - 2 * b)
        mask[b, n:] = 0
        ids[b, n:] = config.pad_token_id
    return ids, types, mask
