import dataclasses
import json

import pytest

from mbkernels import MobileBertConfig


def test_defaults_are_hf_defaults():
    transformers = pytest.importorskip("transformers")
    ours = MobileBertConfig().to_dict()
    theirs = transformers.MobileBertConfig().to_dict()
    for k, v in ours.items():
        if k in ("model_type", "problem_type", "num_labels"):
            continue
        assert theirs[k] == v, k


def test_reads_a_whole_hf_config_dict():
    """Every key transformers writes into config.json is either ours or known bookkeeping."""
    transformers = pytest.importorskip("transformers")
    theirs = transformers.MobileBertConfig(num_hidden_layers=3).to_dict()
    assert MobileBertConfig.from_dict(theirs).num_hidden_layers == 3


def test_presets():
    released = MobileBertConfig.mobilebert()
    assert released.classifier_activation is False and released.hidden_act == "relu"
    assert released.normalization_type == "no_norm" and released.attention_mode == "shared"
    no_opt = MobileBertConfig.mobilebert_no_opt()
    assert (no_opt.hidden_act, no_opt.normalization_type) == ("gelu", "layer_norm")
    tiny = MobileBertConfig.mobilebert_tiny()
    assert tiny.num_feedforward_networks == 2 and tiny.attention_mode == "bottleneck"
    teacher = MobileBertConfig.ib_bert_large()
    assert teacher.attention_mode == "full" and teacher.attention_head_size == 256
    assert teacher.intra_bottleneck_size == 1024 and teacher.intermediate_size == 4096


@pytest.mark.parametrize("field,value,needle", [
    ("num_attention_heads", 3, "num_attention_heads"),
    ("hidden_act", "swish", "hidden_act"),
    ("normalization_type", "batch_norm", "normalization_type"),
    ("hidden_size", 0, "hidden_size"),
    ("attention_probs_dropout_prob", 1.5, "attention_probs_dropout_prob"),
    ("embedding_size", 1024, "embedding_size"),
    ("pad_token_id", 40000, "pad_token_id"),
])
def test_invalid_combinations_name_the_field(field, value, needle):
    with pytest.raises(ValueError, match=needle) as e:
        MobileBertConfig(**{field: value})
    assert repr(value) in str(e.value)


def test_json_round_trip_and_hf_interop(tmp_path):
    c = MobileBertConfig.mobilebert_tiny(num_labels=3)
    c.save(tmp_path, architecture="MobileBertModel")
    d = json.loads((tmp_path / "config.json").read_text())
    assert d["model_type"] == "mobilebert" and d["architectures"] == ["MobileBertModel"]
    assert MobileBertConfig.load(tmp_path) == c
    transformers = pytest.importorskip("transformers")
    hf = transformers.MobileBertConfig.from_pretrained(tmp_path)
    assert hf.num_feedforward_networks == 2 and hf.use_bottleneck_attention
    hf.save_pretrained(tmp_path / "hf")
    back = MobileBertConfig.load(tmp_path / "hf")
    assert dataclasses.replace(back, id2label=None) == dataclasses.replace(c, id2label=None)


def test_unknown_fields_are_rejected(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mobilebert", "hiden_size": 3}))
    with pytest.raises(ValueError, match="hiden_size"):
        MobileBertConfig.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type"):
        MobileBertConfig.load(tmp_path)
