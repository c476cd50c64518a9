"""The torch-free C++ engine (csrc/core/engine) through its example program `mobilebert_run`:
checkpoints saved by mbkernels' `save_pretrained` (default preset with the MLM head, w/o OPT with a
classifier and pooler, -tiny's bottleneck attention, the IB-BERT "full" attention at small widths),
right-padded batches of lengths 1, 7 and 129 with two segments, realistic-scale weights; the engine's outputs match
the Python model's at 1e-4 per-row relative error, natively on every ISA this machine runs and,
cross-compiled, under qemu-aarch64 (NEON). Also: the NEON objects hold vector FMAs, and an
unsupported config is refused naming its field.

The binaries come from the torch-free CMake builds that .ci/test makes (build/core, build/aarch64;
other directories through MBK_CORE_BUILD / MBK_AARCH64_BUILD)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import mbkernels
from mbkernels import MobileBertConfig
from mbkernels.testing import realistic_init_, rel_err

ROOT = Path(__file__).resolve().parents[1]
NATIVE = Path(os.environ.get("MBK_CORE_BUILD", ROOT / "build" / "core")) / "mobilebert_run"
AARCH64_BUILD = Path(os.environ.get("MBK_AARCH64_BUILD", ROOT / "build" / "aarch64"))
AARCH64 = AARCH64_BUILD / "mobilebert_run"
LENGTHS = (129, 7, 1)

requires_native = pytest.mark.skipif(
    not NATIVE.exists(), reason=f"{NATIVE} is not built (cmake -S . -B build/core -G Ninja "
    "-DMBK_WITH_PYTHON=OFF && cmake --build build/core; needs nlohmann-json3-dev)")


def _aarch64_skip_reason() -> str | None:
    if not AARCH64.exists():
        return f"{AARCH64} is not built (cross build with csrc/cmake/aarch64-linux-gnu.cmake)"
    if shutil.which("qemu-aarch64") is None:
        return "qemu-aarch64 is not installed (Debian: qemu-user)"
    return None


def small(config: MobileBertConfig, **overrides) -> MobileBertConfig:
    return dataclasses.replace(config, **{"num_hidden_layers": 2, "vocab_size": 1000, **overrides})


def saved_model(cls, config: MobileBertConfig, folder: Path):
    model = cls(config)
    realistic_init_(model)
    model.eval()
    model.save_pretrained(folder)
    return model


def padded_batch(vocab: int, folder: Path):
    """ids, token types (a second segment in the latter half) and mask right-padded to
    max(LENGTHS); the same ids and types as the engine's --input / --token-types files."""
    g = torch.Generator().manual_seed(1)
    seq = max(LENGTHS)
    ids = torch.zeros(len(LENGTHS), seq, dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(LENGTHS):
        ids[i, :n] = torch.randint(1, vocab, (n,), generator=g)
        types[i, n // 2:n] = 1
        mask[i, :n] = 1
    for name, t in (("ids.txt", ids), ("types.txt", types)):
        rows = [" ".join(str(v) for v in t[i, :n].tolist()) for i, n in enumerate(LENGTHS)]
        (folder / name).write_text("\n".join(rows) + "\n")
    return ids, types, mask


def run_engine(binary: Path, folder: Path, head: str, *extra: str, prefix=()) -> torch.Tensor:
    out = folder / f"out_{head}.npy"
    cmd = [*prefix, str(binary), str(folder), "--input", str(folder / "ids.txt"),
           "--token-types", str(folder / "types.txt"), "--head", head,
           "--output", str(out), "--threads", "2", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}"
    return torch.from_numpy(np.load(out))


def _run_ids(folder: Path) -> subprocess.CompletedProcess:
    """mobilebert_run on folder with one short sequence (the tests of malformed folders)."""
    (folder / "ids.txt").write_text("1 2 3\n")
    return subprocess.run([str(NATIVE), str(folder), "--input", str(folder / "ids.txt")],
                          capture_output=True, text=True, timeout=60)


def qemu_prefix() -> list[str]:
    return ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"]


CASES = {
    # name: (model class, config, head, Python output of the model call)
    "mobilebert-mlm": (mbkernels.MobileBertForMaskedLM, MobileBertConfig.mobilebert(), "mlm", "logits"),
    "no_opt-classify": (mbkernels.MobileBertForSequenceClassification,
                        MobileBertConfig.mobilebert_no_opt(classifier_activation=True, num_labels=3),
                        "classify", "logits"),
    "tiny-hidden": (mbkernels.MobileBertModel, MobileBertConfig.mobilebert_tiny(), "hidden",
                    "last_hidden_state"),
    "ib_bert-hidden": (mbkernels.MobileBertModel,
                       MobileBertConfig.ib_bert_large(intra_bottleneck_size=256, intermediate_size=512,
                                                      hidden_dropout_prob=0.0),
                       "hidden", "last_hidden_state"),
}


def python_outputs(model, batch, field):
    ids, types, mask = batch
    with torch.no_grad():
        out = model(input_ids=ids, token_type_ids=types, attention_mask=mask)
        backbone = model if isinstance(model, mbkernels.MobileBertModel) else model.mobilebert
        hidden = backbone(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state
    return getattr(out, field), hidden


@requires_native
@pytest.mark.parametrize("case", list(CASES))
def test_engine_matches_python(case, tmp_path):
    cls, config, head, field = CASES[case]
    config = small(config)
    model = saved_model(cls, config, tmp_path)
    batch = padded_batch(config.vocab_size, tmp_path)
    ref, ref_hidden = python_outputs(model, batch, field)
    hidden = run_engine(NATIVE, tmp_path, "hidden")
    err = rel_err(hidden.reshape(ref_hidden.shape), ref_hidden)
    assert err <= 1e-4, f"{case}: last hidden state rel err {err:.3g} > 1e-4"
    if head != "hidden":
        out = run_engine(NATIVE, tmp_path, head)
        err = rel_err(out.reshape(ref.shape), ref)
        assert err <= 1e-4, f"{case}: {head} output rel err {err:.3g} > 1e-4"


@requires_native
@pytest.mark.parametrize("case,weight_bits", [(case, 8) for case in CASES] + [("mobilebert-mlm", 7)])
def test_engine_runs_int8_folders(case, weight_bits, tmp_path):
    """A folder `mbkernels.quantize` wrote (SmoothQuant-calibrated) runs in the engine with the same
    int8 GEMMs: the engine's output matches the quantized Python model's, every attention mode, and
    with 7-bit weights (the packer's narrow kernel where the ISA has one)."""
    cls, config, head, field = CASES[case]
    config = small(config)
    model = cls(config)
    realistic_init_(model)
    g = torch.Generator().manual_seed(3)
    calibration = [torch.randint(1, config.vocab_size, (2, 12), generator=g) for _ in range(2)]
    mbkernels.quantize(model.eval(), calibration, weight_bits=weight_bits)
    model.save_pretrained(tmp_path)
    batch = padded_batch(config.vocab_size, tmp_path)
    ref, ref_hidden = python_outputs(model, batch, field)
    for name, out, want in (("hidden", run_engine(NATIVE, tmp_path, "hidden"), ref_hidden),
                            (head, run_engine(NATIVE, tmp_path, head) if head != "hidden" else None, ref)):
        if out is not None:
            err = rel_err(out.reshape(want.shape), want)
            assert err <= 1e-4, f"{case} int8: {name} rel err {err:.3g} > 1e-4"


@requires_native
def test_engine_refuses_an_unknown_int8_format(tmp_path):
    config = small(MobileBertConfig.mobilebert())
    model = mbkernels.quantize(mbkernels.MobileBertModel(config).eval(), smooth_alpha=None)
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["quantization_config"]["version"] = 2
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    r = _run_ids(tmp_path)
    assert r.returncode == 1 and "quantization_config" in r.stderr and "version 2" in r.stderr, r.stderr


@requires_native
@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512", "neon", "avx512-simde"])
def test_engine_every_isa(isa, tmp_path):
    """The default preset through each ISA's kernels (neon on x86 and avx512-simde: SIMDe builds)."""
    compiled = mbkernels.backend.supported_isas() if mbkernels.backend._C is not None else []
    if isa not in compiled:
        pytest.skip(f"ISA {isa} is not supported on this machine/build")
    config = small(MobileBertConfig.mobilebert())
    model = saved_model(mbkernels.MobileBertModel, config, tmp_path)
    batch = padded_batch(config.vocab_size, tmp_path)
    _, ref = python_outputs(model, batch, "last_hidden_state")
    out = run_engine(NATIVE, tmp_path, "hidden", "--isa", isa)
    err = rel_err(out.reshape(ref.shape), ref)
    assert err <= 1e-4, f"{isa}: rel err {err:.3g} > 1e-4"


def test_engine_aarch64_under_qemu(tmp_path):
    reason = _aarch64_skip_reason()
    if reason:
        pytest.skip(reason)
    # The encoder only (qemu is slow); the heads' GEMMs are the same NEON kernels ctest covers.
    config = small(MobileBertConfig.mobilebert())
    model = saved_model(mbkernels.MobileBertModel, config, tmp_path)
    batch = padded_batch(config.vocab_size, tmp_path)
    _, ref = python_outputs(model, batch, "last_hidden_state")
    out = run_engine(AARCH64, tmp_path, "hidden", prefix=qemu_prefix())
    err = rel_err(out.reshape(ref.shape), ref)
    assert err <= 1e-4, f"aarch64 NEON under qemu: rel err {err:.3g} > 1e-4"


def test_neon_attention_has_vector_fma():
    """The cross-built NEON attention object uses fmla on vectors (no scalar code passing as NEON)."""
    obj = AARCH64_BUILD / "CMakeFiles" / "mbk_core.dir" / "csrc" / "core" / "ops" / "attention_neon.cc.o"
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if not obj.exists() or objdump is None:
        pytest.skip(f"{obj} or aarch64-linux-gnu-objdump is missing (no aarch64 cross build)")
    asm = subprocess.run([objdump, "-d", str(obj)], capture_output=True, text=True, check=True).stdout
    vector_fmas = [line for line in asm.splitlines() if "\tfmla\tv" in line and ".4s" in line]
    assert len(vector_fmas) >= 24, f"expected the 6x4-vector tiles' fmla v.4s, found {len(vector_fmas)}"


@requires_native
def test_engine_refuses_unsupported_config(tmp_path):
    config = small(MobileBertConfig.mobilebert())
    saved_model(mbkernels.MobileBertModel, config, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["use_bottleneck"] = False
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    r = _run_ids(tmp_path)
    assert r.returncode == 1 and "use_bottleneck" in r.stderr, r.stderr


@requires_native
def test_engine_names_missing_tensor(tmp_path):
    from safetensors.torch import load_file, save_file

    config = small(MobileBertConfig.mobilebert())
    saved_model(mbkernels.MobileBertModel, config, tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["encoder.layer.1.attention.self.key.bias"]
    save_file(state, tmp_path / "model.safetensors")
    r = _run_ids(tmp_path)
    assert r.returncode == 1 and "encoder.layer.1.attention.self.key.bias" in r.stderr, r.stderr


@requires_native
def test_engine_ignores_num_labels_without_a_classifier(tmp_path):
    """Crashed the fuzz target (csrc/fuzz corpus crash-num-labels-without-classifier): the arena held
    num_labels logits per sequence even without a classifier, so config.json's num_labels alone
    could ask for any allocation."""
    config = small(MobileBertConfig.mobilebert(), num_hidden_layers=1)
    saved_model(mbkernels.MobileBertModel, config, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["num_labels"] = 10**15
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    r = _run_ids(tmp_path)
    assert r.returncode == 0, r.stderr


@requires_native
@pytest.mark.parametrize("defect", ["nan", "zero", "negative", "count", "smooth"])
def test_engine_names_a_malformed_int8_tensor(defect, tmp_path):
    """A malformed int8 folder is refused naming the tensor, as the Python loader does: a weight_scale
    that is NaN, 0 or negative or has a value per channel too few, an input_smooth that is not > 0."""
    from safetensors.torch import load_file, save_file

    config = small(MobileBertConfig.mobilebert(), num_hidden_layers=1)
    model = mbkernels.MobileBertModel(config).eval()
    g = torch.Generator().manual_seed(3)
    mbkernels.quantize(model, [torch.randint(1, config.vocab_size, (2, 12), generator=g)])
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    name = ("encoder.layer.0.bottleneck.input.dense.input_smooth" if defect == "smooth"
            else "encoder.layer.0.attention.self.query.weight_scale")
    t = state[name].clone()
    if defect == "count":
        t = t[:-1].clone()
    else:
        t[1] = {"nan": float("nan"), "zero": 0.0, "negative": -1.0, "smooth": float("inf")}[defect]
    state[name] = t
    save_file(state, tmp_path / "model.safetensors")
    r = _run_ids(tmp_path)
    assert r.returncode == 1 and f"'{name}'" in r.stderr, r.stderr

