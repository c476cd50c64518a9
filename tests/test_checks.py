"""Finite checks (mbkernels/checks.py): the float16 overflow flag of every model forward, named by op
and layer; the check mode (context manager and MBK_CHECK_FINITE) for every dtype, forward and
backward; NaN propagating as in torch when checks are off; nothing computed when off."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import mbkernels
from mbkernels import MobileBertConfig, MobileBertModel, NonFiniteError, check_finite, checks, ops
from mbkernels.testing import realistic_init_

from helpers import small
from op_cases import nonorm_case

ROOT = Path(__file__).resolve().parents[1]
FP16_MAX = torch.finfo(torch.float16).max


def overflowing_model(layers: int = 4) -> MobileBertModel:
    """Realistic-scale activations (mbkernels.testing) that stay below float16's range in the
    embeddings and layer 0 and pass it in layer 1 (each layer doubles the outlier channels)."""
    torch.manual_seed(0)
    model = MobileBertModel(small(MobileBertConfig.mobilebert(), num_hidden_layers=layers)).eval()
    return realistic_init_(model, scale=500.0, growth=2.0)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(1, 1000, (2, 9), generator=torch.Generator().manual_seed(1))


def test_float16_overflow_names_the_first_op_and_layer(ids):
    model = overflowing_model()
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states  # float32 truth
        peaks = [float(h.abs().max()) for h in hidden]
        # Independent of the checks: in float32 layer 1 is the first whose output leaves float16's range.
        assert peaks[0] < FP16_MAX and peaks[1] < FP16_MAX < peaks[2], peaks
        half = model.half()
        with mbkernels.use_backend("reference"), pytest.raises(NonFiniteError) as e:
            half(ids)
    err = e.value
    assert (err.site, err.op, err.kind, err.dtype) == ("layer 1 (encoder.layer.1)", "linear_norm", "inf", torch.float16)
    assert str(err).startswith("layer 1 (encoder.layer.1) linear_norm produced inf in float16")
    assert "65504" in str(err) and "bfloat16" in str(err)
    # The check mode (a sync after every op) stops at the same op.
    with torch.no_grad(), mbkernels.use_backend("reference"), check_finite(), pytest.raises(NonFiniteError) as e2:
        half(ids)
    assert (e2.value.site, e2.value.op) == (err.site, err.op)


def test_float16_forward_syncs_once_and_only_in_float16(ids, monkeypatch):
    """One device value per op output and one look at them per forward in float16; none in float32."""
    model = MobileBertModel(small(MobileBertConfig.mobilebert(), num_hidden_layers=3)).eval()
    norms, looks = [], []
    real_norm, real_first = checks._max_abs, checks._raise_first
    monkeypatch.setattr(checks, "_max_abs", lambda t: norms.append(t) or real_norm(t))
    monkeypatch.setattr(checks, "_raise_first", lambda p: looks.append(len(p)) or real_first(p))
    with torch.no_grad():
        model(ids)
        assert norms == [] and looks == []  # float32, checks off: nothing computed
        with mbkernels.use_backend("reference"):
            out = model.half()(ids).last_hidden_state  # plain init: no overflow, no error
    assert torch.isfinite(out).all()
    assert looks == [1 + 3 * 3] and len(norms) == 10  # embedding + 3 ops per layer, looked at once


def test_fused_cpu_float16_is_a_dtype_error(ids):
    model = MobileBertModel(small(MobileBertConfig.mobilebert())).eval().half()
    with torch.no_grad(), pytest.raises(TypeError) as e:
        model(ids)
    assert "float16" in str(e.value) and "bfloat16" in str(e.value) and "mbkernels.ops.embedding" in str(e.value)


def nan_model(layer: int = 1) -> MobileBertModel:
    """A float32 model with one NaN weight in layer `layer`'s first FFN."""
    model = MobileBertModel(small(MobileBertConfig.mobilebert(), num_hidden_layers=3)).eval()
    with torch.no_grad():
        model.encoder.layer[layer].ffn[0].intermediate.dense.weight[3, 5] = float("nan")
    return model


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_check_mode_raises_at_the_first_non_finite_op(ids, backend):
    model = nan_model(layer=1)
    with torch.no_grad(), mbkernels.use_backend(backend):
        out = model(ids).last_hidden_state  # off: NaN propagates as in torch, no exception
        assert out.isnan().all()  # a NaN weight reaches every row, as in torch
        with check_finite(), pytest.raises(NonFiniteError) as e:
            model(ids)
    assert str(e.value) == "layer 1 (encoder.layer.1) ffn_stack produced nan in float32"
    assert not checks.active()  # the block ended: off again


def test_check_mode_in_the_backward_names_the_backward_op_and_layer(ids):
    model = nan_model(layer=1)
    with torch.no_grad():
        model.encoder.layer[1].ffn[0].intermediate.dense.weight[3, 5] = 0.0  # finite forward
    with check_finite(), pytest.raises(NonFiniteError) as e:  # layers are named when the forward is checked
        out = model(ids).last_hidden_state
        (out * float("nan")).sum().backward()  # the first backward op is the last layer's linear_norm
    assert str(e.value) == "layer 2 (encoder.layer.2) linear_norm_backward produced nan in float32"


def test_check_mode_on_a_direct_op_call():
    fn, args, _ = nonorm_case(s=3)
    x = args[0].detach().clone()
    x[1, 2, 3] = float("inf")
    with check_finite(), pytest.raises(NonFiniteError) as e:
        fn(x, *args[1:])
    assert str(e.value) == "nonorm produced inf in float32"
    y = fn(x, *args[1:])  # off again: inf propagates, as (x + r) * w + b does in torch
    assert torch.isinf(y[1, 2, 3]) and torch.isfinite(y).sum() == y.numel() - 1


def test_check_mode_is_per_thread_and_can_be_switched_off():
    fn, args, _ = nonorm_case(s=3)
    x = args[0].detach().clone()
    x[0, 0, 0] = float("nan")
    seen = []
    with check_finite():
        t = threading.Thread(target=lambda: seen.append(bool(fn(x, *args[1:]).isnan().any())))
        t.start()
        t.join()
        with check_finite(False):
            fn(x, *args[1:])
    assert seen == [True]  # the other thread ran unchecked


def test_environment_variable_turns_the_check_mode_on():
    code = ("import torch, mbkernels\n"
            "x = torch.ones(2, 4); x[1, 1] = float('nan')\n"
            "try:\n"
            "    mbkernels.ops.layernorm(x, torch.ones(4), torch.zeros(4))\n"
            "except mbkernels.NonFiniteError as e:\n"
            "    print('raised:', e)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MBK_CHECK_FINITE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    assert proc.stdout.strip() == "raised: layernorm produced nan in float32", proc.stdout + proc.stderr


def test_nan_input_propagates_through_the_model_like_the_reference(ids):
    """Checks off: a NaN in the input embeddings gives NaN exactly where the reference gives it."""
    model = MobileBertModel(small(MobileBertConfig.mobilebert(), num_hidden_layers=2)).eval()
    embeds = torch.randn(2, 6, model.config.embedding_size)
    embeds[1, 2, 7] = float("nan")
    with torch.no_grad():
        fused = model(inputs_embeds=embeds).last_hidden_state
        with mbkernels.use_backend("reference"):
            ref = model(inputs_embeds=embeds).last_hidden_state
    assert torch.equal(fused.isnan(), ref.isnan()) and ref[1].isnan().all() and not ref[0].isnan().any()


def test_op_outputs_with_scores_are_checked_and_masked_scores_are_finite():
    """Masked scores hold finfo.min (finite): a padded batch passes the check mode."""
    model = MobileBertModel(small(MobileBertConfig.mobilebert())).eval()
    ids = torch.randint(1, 1000, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6])
    with torch.no_grad(), check_finite():
        out = model(ids, attention_mask=mask, output_attention_scores=True)
    assert out.attention_scores[0].min() == torch.finfo(torch.float32).min
    assert ops is mbkernels.ops


@pytest.mark.skipif(not mbkernels.backend.TRITON_INTERPRET and not torch.cuda.is_available(),
                    reason="the Triton path needs a GPU or TRITON_INTERPRET=1 before import (CI runs it so)")
def test_float16_overflow_on_the_triton_path(ids):
    model = overflowing_model()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.half().to(device)
    mbkernels.backend.last_ran.clear()
    with torch.no_grad(), mbkernels.use_backend("triton"), pytest.raises(NonFiniteError) as e:
        model(ids.to(device))
    assert str(e.value).startswith("layer 1 (encoder.layer.1) linear_norm produced inf in float16")
    assert mbkernels.backend.last_ran["linear_norm"] == "triton"  # the kernel ran, not the reference
