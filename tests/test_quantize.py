"""int8 inference (mbkernels.quantize): the fused CPU path of a quantized model against the int8
reference (the same integers: `use_backend("reference")` computes `reference.int8_linear`) on every
ISA with an int8 GEMM, whole-encoder op and per-layer ops alike; the int8 model against the float32
one (with and without SmoothQuant's calibration); save/load round trips and the errors a wrong
folder, a gradient or a second quantization give."""

import copy
import json

import pytest
import torch
from safetensors import safe_open

import mbkernels
from mbkernels import MobileBertConfig, MobileBertForSequenceClassification, MobileBertModel, quantize, use_backend
from mbkernels.quantize import Int8Linear
from mbkernels.testing import realistic_init_, rel_err

from helpers import padded_batch, small

_C = pytest.importorskip("mbkernels._C", reason="mbkernels._C is not built")


def _model(cls=MobileBertModel, layers=2, seed=0, **overrides):
    model = cls(small(MobileBertConfig.mobilebert(), num_hidden_layers=layers, **overrides)).eval()
    realistic_init_(model, seed=seed)
    return model


def _calibration(config, batches=3):
    g = torch.Generator().manual_seed(7)
    return [torch.randint(1, config.vocab_size, (4, 16), generator=g) for _ in range(batches)]


def _inputs(config):
    ids, types, mask = padded_batch(config, batch=3, seq=13)
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


def _int8_isas():
    from test_int8_gemm import _INT8_ISAS

    return _INT8_ISAS


@pytest.mark.parametrize("smooth", [False, True], ids=["plain", "smoothquant"])
def test_quantized_model_matches_the_int8_reference(isa, smooth):
    if isa not in _int8_isas():
        pytest.skip(f"{isa} has no int8 GEMM kernel")
    model = _model()
    q = quantize(model, _calibration(model.config) if smooth else None, smooth_alpha=0.5 if smooth else None)
    inputs = _inputs(model.config)
    with torch.inference_mode():
        fused = q(**inputs).last_hidden_state
        assert mbkernels.backend.last_ran["encoder"] == f"cpu:{isa}"
        per_layer = q(**inputs, output_hidden_states=True).last_hidden_state  # three ops per layer
        assert mbkernels.backend.last_ran["ffn_stack"] == f"cpu:{isa}"
        with use_backend("reference"):
            ref = q(**inputs).last_hidden_state
    assert rel_err(fused, ref) <= 1e-5, f"encoder op {rel_err(fused, ref):.3g}"
    assert rel_err(per_layer, ref) <= 1e-5, f"per-layer ops {rel_err(per_layer, ref):.3g}"


def test_7_bit_weights_run_the_narrow_kernel_and_round_trip(isa, tmp_path):
    """weight_bits=7: weights in [-63, 63], recorded in config.json; where the ISA has a narrow kernel
    (AVX2) the packer picks it; the fused path equals the int8 reference, after a save and load too."""
    if isa not in _int8_isas():
        pytest.skip(f"{isa} has no int8 GEMM kernel")
    from mbkernels.ops import _packed

    model = _model()
    q = quantize(model, _calibration(model.config), weight_bits=7)
    linears = [m for m in q.modules() if isinstance(m, Int8Linear)]
    assert max(int(m.weight.abs().max()) for m in linears) == 63
    kernel = _packed.packed([(linears[0].weight, linears[0].bias)]).kernel
    assert kernel == ("q8w7_gemm_5x16__avx2" if isa == "avx2" else _C.int8_gemm_kernel(8))
    q.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["quantization_config"]["weight_bits"] == 7
    loaded = MobileBertModel.from_pretrained(tmp_path)
    inputs = _inputs(model.config)
    with torch.inference_mode():
        fused = q(**inputs).last_hidden_state
        assert torch.equal(loaded(**inputs).last_hidden_state, fused)
        with use_backend("reference"):
            ref = q(**inputs).last_hidden_state
    assert rel_err(fused, ref) <= 1e-5, f"{rel_err(fused, ref):.3g}"


def test_7_bit_weights_stay_close_to_float32():
    """Half the weight resolution, so more error than 8 bits (measured here with the default alpha 0.3:
    per-row 7.6e-6 against 8-bit's 5.3e-6, per-channel 2.0e-3 against 1.4e-3); far from a wrong scale's ~1."""
    model = _model()
    inputs = _inputs(model.config)
    with torch.inference_mode():
        want = model(**inputs).last_hidden_state
        got = quantize(copy.deepcopy(model), _calibration(model.config), weight_bits=7)(**inputs).last_hidden_state
    assert rel_err(got, want) <= 1e-4 and _channel_error(got, want) <= 0.01


def test_quantize_replaces_every_encoder_linear_and_freezes_the_model():
    model = _model()
    q = quantize(model, smooth_alpha=None)
    assert q is model and not q.training
    int8s = [m for m in q.modules() if isinstance(m, Int8Linear)]
    assert len(int8s) == 15 * q.config.num_hidden_layers  # 2 bottlenecks, Q K V, attention out, 4 x 2 FFN, output
    assert all(m.weight.dtype == torch.int8 and m.weight.abs().max() <= 127 for m in int8s)
    assert not any(p.requires_grad for p in q.parameters())
    assert q.config.quantization_config["quant_method"] == "mbkernels-int8"
    assert isinstance(q.embeddings.embedding_transformation, torch.nn.Linear)  # embeddings stay fp32


def _channel_error(got, want):
    """The median error in units of each channel's spread over the tokens: the small channels count as
    much as the 1e5-scale outlier ones (a per-row norm sees only those)."""
    spread = want.flatten(0, -2).std(0).clamp_min(1e-6)
    return float(((got - want).flatten(0, -2) / spread).abs().median())


def test_int8_model_stays_close_to_float32_and_smoothquant_matters():
    """Measured here: per-row error ~3e-4 without smoothing, ~5e-6 with; per-channel error 0.087 of the
    channels' spread without smoothing (the outlier channels crush the small ones in each row's scale),
    0.0014 with it. A wrong scale or rounding is ~1."""
    model = _model()
    inputs = _inputs(model.config)
    with torch.inference_mode():
        want = model(**inputs).last_hidden_state
        plain = quantize(copy.deepcopy(model), smooth_alpha=None)(**inputs).last_hidden_state
        smooth = quantize(copy.deepcopy(model), _calibration(model.config))(**inputs).last_hidden_state
    assert rel_err(plain, want) <= 1e-3 and rel_err(smooth, want) <= 1e-4
    assert _channel_error(smooth, want) <= 0.01 < _channel_error(plain, want) <= 0.3


def test_quantize_without_calibration_warns():
    with pytest.warns(UserWarning, match="no calibration batches, so no SmoothQuant"):
        quantize(_model())


def test_heads_quantize_and_round_trip(tmp_path):
    model = _model(MobileBertForSequenceClassification)
    q = quantize(model, _calibration(model.config))
    q.save_pretrained(tmp_path)
    settings = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert settings["quant_method"] == "mbkernels-int8" and settings["version"] == 1
    assert settings["smooth_alpha"] == 0.3 and len(settings["modules"]) == 15
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert f.get_tensor("mobilebert.encoder.layer.0.ffn.0.intermediate.dense.weight").dtype == torch.int8
        assert f.get_tensor("mobilebert.encoder.layer.0.ffn.0.intermediate.dense.weight_scale").dtype == torch.float32
        assert f.get_tensor("mobilebert.encoder.layer.1.bottleneck.input.dense.input_smooth").shape == (512,)
    loaded = MobileBertForSequenceClassification.from_pretrained(tmp_path)
    inputs = _inputs(model.config)
    with torch.inference_mode():
        assert torch.equal(loaded(**inputs).logits, q(**inputs).logits)


def _saved(tmp_path, weight_bits=8):
    quantize(_model(), smooth_alpha=None, weight_bits=weight_bits).save_pretrained(tmp_path)
    return json.loads((tmp_path / "config.json").read_text())


def test_unknown_format_version_is_an_error(tmp_path):
    config = _saved(tmp_path)
    config["quantization_config"]["version"] = 2
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="quant_method 'mbkernels-int8' version 1.*got quant_method 'mbkernels-int8' "
                                         "version 2"):
        MobileBertModel.from_pretrained(tmp_path)


def test_float_weights_where_the_settings_say_int8_are_an_error(tmp_path):
    _saved(tmp_path)
    model = _model()
    model.save_pretrained(tmp_path / "float")
    (tmp_path / "float" / "config.json").write_text((tmp_path / "config.json").read_text())
    with pytest.raises(ValueError, match="expected torch.int8 .*got torch.float32"):
        MobileBertModel.from_pretrained(tmp_path / "float")


def test_missing_scales_are_an_error(tmp_path):
    from safetensors.torch import load_file, save_file

    _saved(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["encoder.layer.1.attention.self.key.weight_scale"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="lacks.*encoder.layer.1.attention.self.key.weight_scale"):
        MobileBertModel.from_pretrained(tmp_path)


@pytest.mark.parametrize("key,value,message", [
    ("encoder.layer.0.attention.self.key.weight_scale", float("nan"), "weight_scale: expected finite values > 0"),
    ("encoder.layer.1.ffn.0.output.dense.weight_scale", 0.0, "weight_scale: expected finite values > 0, got 0.0"),
    ("encoder.layer.1.attention.self.value.weight", -128,
     r"expected int8 values in \[-127, 127\] \(weight_bits 8\), got -128"),
    ("encoder.layer.0.ffn.1.output.dense.weight", 64,
     r"expected int8 values in \[-63, 63\] \(weight_bits 7\), got 64"),
])
def test_malformed_int8_values_are_an_error(tmp_path, key, value, message):
    from safetensors.torch import load_file, save_file

    _saved(tmp_path, weight_bits=7 if "weight_bits 7" in message else 8)
    state = load_file(tmp_path / "model.safetensors")
    state[key].view(-1)[3] = value
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=message):
        MobileBertModel.from_pretrained(tmp_path)


def test_calibration_that_overflows_is_an_error():
    model = _model()
    with torch.no_grad():
        model.encoder.layer[0].output.bottleneck.LayerNorm.weight[5] = float("inf")
    with pytest.raises(ValueError, match="layer 1's input holds inf or NaN"):
        quantize(model, _calibration(model.config))
    with pytest.raises(ValueError, match="at least one batch"):
        quantize(_model(), [])


@pytest.mark.parametrize("layer_outliers,weight_bits,row_bound", [(0, 8, 1e-4), (2, 7, 3e-2)],
                         ids=["one-outlier-set", "outlier-sets-per-layer-7-bit"])
def test_24_layer_model_stays_within_the_bounds(layer_outliers, weight_bits, row_bound):
    """The whole realistic-weight model, calibrated: the per-row error bound of the issue (3e-2) with
    room to spare on one outlier set (measured ~3e-6); with outlier sets that grow per layer and 7-bit
    weights, the hardest setting measured, within it (~1.3e-2: each layer's new outliers amplify the
    int8 error of the values they are made from). The small channels within 1e-2 of their spread
    (~7e-4, ~1.1e-3)."""
    model = MobileBertModel(MobileBertConfig.mobilebert()).eval()
    realistic_init_(model, seed=3, layer_outliers=layer_outliers)
    g = torch.Generator().manual_seed(11)
    ids = torch.randint(1, model.config.vocab_size, (1, 48), generator=g)
    calibration = [torch.randint(1, model.config.vocab_size, (2, 48), generator=g) for _ in range(2)]
    with torch.inference_mode():
        want = model(ids).last_hidden_state
        got = quantize(model, calibration, weight_bits=weight_bits)(ids).last_hidden_state
    assert rel_err(got, want) <= row_bound, f"{rel_err(got, want):.3g}"
    assert _channel_error(got, want) <= 1e-2, f"{_channel_error(got, want):.3g}"


def test_gradient_through_int8_is_an_error():
    q = quantize(_model(), smooth_alpha=None)
    q.embeddings.word_embeddings.weight.requires_grad_(True)  # a user trying to train it
    with pytest.raises(RuntimeError, match="gradient was asked for through int8 weights"):
        q(**_inputs(q.config))


def test_quantizing_twice_and_converting_to_hf_are_errors():
    q = quantize(_model(), smooth_alpha=None)
    with pytest.raises(ValueError, match="already quantized"):
        quantize(q)
    with pytest.raises(ValueError, match="int8-quantized"):
        mbkernels.to_hf(q)
    with pytest.raises(TypeError, match="MobileBertLayer"):
        quantize(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="smooth_alpha"):
        quantize(_model(), _calibration(q.config), smooth_alpha=1.5)
    with pytest.raises(ValueError, match="weight_bits: expected 7 or 8, got 4"):
        quantize(_model(), _calibration(q.config), weight_bits=4)


def test_unknown_weight_bits_in_a_folder_is_an_error(tmp_path):
    config = _saved(tmp_path)
    config["quantization_config"]["weight_bits"] = 6
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="quantization_config: weight_bits: expected 7 or 8, got 6"):
        MobileBertModel.from_pretrained(tmp_path)


def test_transformers_loads_the_raw_integers(tmp_path):
    """What transformers' own loader does with the folder (documented in mbkernels/quantize.py): it
    knows no quantizer 'mbkernels-int8', skips the scales as unexpected keys and loads the int8
    integers as float weights, unscaled: a different model. Load int8 folders with mbkernels."""
    transformers = pytest.importorskip("transformers")
    _saved(tmp_path)
    hf = transformers.MobileBertModel.from_pretrained(tmp_path)
    w = hf.encoder.layer[0].attention.self.query.weight
    assert w.dtype == torch.float32 and torch.equal(w, w.round()) and w.abs().max() > 1


def test_cli_quantizes_a_folder_with_a_calibration_text(tmp_path):
    """`mbkernels quantize` as a user runs it: a saved classifier, its vocab, real text."""
    import shutil
    import subprocess
    import sys

    from mbkernels.distill.data import write_corpus
    from test_distill_support import bbc_documents, minilm_dir

    model = _model(MobileBertForSequenceClassification, vocab_size=30522)  # the vocab's size
    model.save_pretrained(tmp_path / "fp32")
    shutil.copyfile(minilm_dir() / "vocab.txt", tmp_path / "fp32" / "vocab.txt")
    write_corpus(bbc_documents(20), tmp_path / "text.txt")
    cli = [sys.executable, "-m", "mbkernels.cli", "quantize", "--model", str(tmp_path / "fp32"), "--output",
           str(tmp_path / "int8"), "--samples", "16", "--max-seq-len", "32"]
    proc = subprocess.run([*cli, "--calibration", str(tmp_path / "text.txt")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "calibrating" in proc.stderr and "quantizing layers" in proc.stderr  # the progress bars
    q = MobileBertForSequenceClassification.from_pretrained(tmp_path / "int8")
    assert q.config.quantization_config["smooth_alpha"] == 0.3
    assert (tmp_path / "int8" / "vocab.txt").is_file()
    inputs = _inputs(model.config)
    with torch.inference_mode():
        assert rel_err(q(**inputs).logits, model(**inputs).logits) <= 0.05
    bad = subprocess.run([*cli, "--calibration", str(tmp_path / "missing.txt")], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "missing.txt" in bad.stderr
