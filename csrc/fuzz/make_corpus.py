"""Regenerates the seed corpus of the loaders fuzz target (csrc/fuzz/fuzz_loaders.cc) from
mbkernels' own save_pretrained, so the seeds are the folders users really write:

    PYTHONPATH=. python3 csrc/fuzz/make_corpus.py    # writes csrc/fuzz/corpus/fuzz_loaders/{valid,bad}-*

Each seed is one folder as one input: config.json, the separator of csrc/fuzz/loader_input.h,
model.safetensors. Tiny widths (hidden 8, one layer, vocab 16) keep each a few KB, so the fuzzer's
mutations land on headers and values rather than on kilobytes of weights. valid-* must load in the
engine (ctest fuzz_corpus checks it, else the fuzzer would only explore error paths); bad-* are the
malformed int8 folders the loaders must refuse (a start for the mutations near those checks). The
fuzzer's minimized findings sit beside them as crash-* (kept by hand, not made here)."""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

import mbkernels
from mbkernels import MobileBertConfig

CORPUS = Path(__file__).resolve().parent / "corpus" / "fuzz_loaders"
SEPARATOR = b"\n--model.safetensors--\n"  # loader_input.h kSeparator
TINY = dict(vocab_size=16, hidden_size=8, embedding_size=4, intra_bottleneck_size=4, num_attention_heads=2,
            intermediate_size=8, num_hidden_layers=1, max_position_embeddings=4, num_feedforward_networks=1)


def folder_bytes(model) -> tuple[dict, bytes]:
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        return json.loads((Path(d) / "config.json").read_text()), (Path(d) / "model.safetensors").read_bytes()


def seed(config: dict, weights: bytes) -> bytes:
    return json.dumps(config, sort_keys=True).encode() + SEPARATOR + weights


def int8(model, weight_bits: int = 8, calibrate: bool = False):
    model.eval()
    if not calibrate:
        return mbkernels.quantize(model, smooth_alpha=None, weight_bits=weight_bits)
    g = torch.Generator().manual_seed(2)
    batches = [torch.randint(1, TINY["vocab_size"], (2, 4), generator=g) for _ in range(2)]
    return mbkernels.quantize(model, batches, weight_bits=weight_bits)  # SmoothQuant: input_smooth


def replaced(state: dict, name: str, tensor: torch.Tensor) -> bytes:
    """model.safetensors of state with tensor name replaced."""
    return save_safetensors({**state, name: tensor}, metadata={"format": "pt"})


def main() -> int:
    torch.manual_seed(0)
    seeds = {
        # fp32: the default preset's backbone, w/o OPT with the MLM head, -tiny's bottleneck
        # attention with two FFNs in F16, IB-BERT's full attention (the engine's three modes).
        "valid-fp32-model": mbkernels.MobileBertModel(MobileBertConfig.mobilebert(**TINY)),
        "valid-fp32-no_opt-mlm": mbkernels.MobileBertForMaskedLM(MobileBertConfig.mobilebert_no_opt(**TINY)),
        "valid-f16-tiny": mbkernels.MobileBertModel(
            MobileBertConfig.mobilebert_tiny(**{**TINY, "num_feedforward_networks": 2})).half(),
        # int8 (mbkernels.quantize): calibrated (input_smooth) with a classifier and pooler, plain,
        # and 7-bit weights over full attention.
        "valid-int8-classify": int8(mbkernels.MobileBertForSequenceClassification(
            MobileBertConfig.mobilebert(**TINY, classifier_activation=True, num_labels=3)), calibrate=True),
        "valid-int8-model": int8(mbkernels.MobileBertModel(MobileBertConfig.mobilebert(**TINY))),
        "valid-int8-w7-full": int8(mbkernels.MobileBertModel(
            MobileBertConfig.ib_bert_large(**{**TINY, "intra_bottleneck_size": 8})), weight_bits=7),
    }
    files = {name: folder_bytes(model) for name, model in seeds.items()}

    # Malformed int8 folders, each from valid-int8-classify with one defect the loaders must name.
    config, weights = files["valid-int8-classify"]
    state = load_safetensors(weights)
    scale = "mobilebert.encoder.layer.0.attention.self.query.weight_scale"
    weight = "mobilebert.encoder.layer.0.attention.self.key.weight"

    smooth = "mobilebert.encoder.layer.0.bottleneck.input.dense.input_smooth"
    nan_scale, inf_smooth = state[scale].clone(), state[smooth].clone()
    nan_scale[1], inf_smooth[2] = math.nan, math.inf
    bad = {
        "bad-int8-truncated": (config, weights[:len(weights) - 40]),
        "bad-int8-nan-scale": (config, replaced(state, scale, nan_scale)),
        "bad-int8-zero-scale": (config, replaced(state, scale, torch.zeros_like(state[scale]))),
        "bad-int8-negative-scale": (config, replaced(state, scale, -state[scale])),
        "bad-int8-scale-count": (config, replaced(state, scale, state[scale][:-1].clone())),
        "bad-int8-inf-smooth": (config, replaced(state, smooth, inf_smooth)),
        "bad-int8-f32-weight": (config, replaced(state, weight, state[weight].float())),
        "bad-int8-weight-minus-128": (config, replaced(state, weight, torch.full_like(state[weight], -128))),
        "bad-int8-version": ({**config, "quantization_config": {**config["quantization_config"], "version": 2}},
                             weights),
        "bad-int8-weight-bits": ({**config, "quantization_config": {**config["quantization_config"],
                                                                    "weight_bits": 6}}, weights),
    }
    # 7-bit weights beyond [-63, 63]: outside the folder's own weight_bits, as the Python loader says.
    w7_config, w7_weights = files["valid-int8-w7-full"]
    over = torch.full((8, 8), 100, dtype=torch.int8)
    bad["bad-int8-w7-weight-over-63"] = (w7_config, replaced(load_safetensors(w7_weights),
                                                             "encoder.layer.0.attention.self.query.weight", over))
    files.update(bad)

    CORPUS.mkdir(parents=True, exist_ok=True)
    for old in CORPUS.glob("valid-*"):
        old.unlink()
    for old in CORPUS.glob("bad-*"):
        old.unlink()
    for name, (config, weights) in files.items():
        data = seed(config, weights)
        (CORPUS / f"{name}.bin").write_bytes(data)
        print(f"{name}.bin: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
