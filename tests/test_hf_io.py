"""Save/load round trips with transformers in both directions, for the backbone and each head."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

import mbkernels
from mbkernels import MobileBertConfig
from mbkernels.testing import rel_err

from helpers import hf_config, padded_batch, small

HEADS = ["MobileBertModel", "MobileBertForPreTraining", "MobileBertForMaskedLM",
         "MobileBertForNextSentencePrediction", "MobileBertForSequenceClassification",
         "MobileBertForTokenClassification", "MobileBertForQuestionAnswering"]


def _logits(out):
    for name in ("prediction_logits", "logits", "start_logits", "last_hidden_state"):
        if getattr(out, name, None) is not None:
            return getattr(out, name)
    raise AssertionError(out)


def _inputs(config):
    ids, types, mask = padded_batch(config, batch=2, seq=9)
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


@pytest.mark.parametrize("head", HEADS)
def test_ours_to_hf(head, tmp_path):
    ours = getattr(mbkernels, head)(small(MobileBertConfig.mobilebert())).eval()
    ours.save_pretrained(tmp_path)
    theirs, info = getattr(transformers, head).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    x = _inputs(ours.config)
    with torch.no_grad():
        assert rel_err(_logits(ours(**x)), _logits(theirs.eval()(**x))) <= 1e-5


@pytest.mark.parametrize("head", HEADS)
def test_hf_to_ours(head, tmp_path):
    theirs = getattr(transformers, head)(hf_config(small(MobileBertConfig.mobilebert_no_opt()))).eval()
    theirs.save_pretrained(tmp_path)
    ours, info = getattr(mbkernels, head).from_pretrained(tmp_path, output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": []}
    x = _inputs(ours.config)
    with torch.no_grad():
        assert rel_err(_logits(ours(**x)), _logits(theirs(**x))) <= 1e-5


def test_pytorch_bin_and_prefix_moves(tmp_path):
    """A pre-training checkpoint (pytorch_model.bin) loads into the backbone: heads reported unexpected."""
    full = mbkernels.MobileBertForPreTraining(small(MobileBertConfig.mobilebert())).eval()
    full.save_pretrained(tmp_path, safe_serialization=False)
    with pytest.warns(UserWarning, match="unexpected keys"):
        backbone, info = mbkernels.MobileBertModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"]
    assert any(k.startswith("cls.") for k in info["unexpected_keys"])
    torch.testing.assert_close(backbone.embeddings.word_embeddings.weight,
                               full.mobilebert.embeddings.word_embeddings.weight)
    with pytest.raises(ValueError, match="unexpected keys"):
        mbkernels.MobileBertModel.from_pretrained(tmp_path, strict=True)
    # ... and a backbone checkpoint loads into a head model: the head is reported missing.
    backbone.save_pretrained(tmp_path / "b")
    _, info = mbkernels.MobileBertForSequenceClassification.from_pretrained(tmp_path / "b", output_loading_info=True)
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}


def test_tied_decoder_shares_the_embedding(tmp_path):
    m = mbkernels.MobileBertForMaskedLM(small(MobileBertConfig.mobilebert()))
    assert m.cls.predictions.decoder.weight is m.mobilebert.embeddings.word_embeddings.weight
    m.save_pretrained(tmp_path)
    loaded = mbkernels.MobileBertForMaskedLM.from_pretrained(tmp_path)
    assert loaded.cls.predictions.decoder.weight is loaded.mobilebert.embeddings.word_embeddings.weight
    assert loaded.cls.predictions.decoder.bias is loaded.cls.predictions.bias


def test_corrupt_and_inconsistent_checkpoints(tmp_path):
    m = mbkernels.MobileBertModel(small(MobileBertConfig.mobilebert()))
    m.save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="safetensors"):
        mbkernels.MobileBertModel.from_pretrained(tmp_path)
    m.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="inconsistent"):
        mbkernels.MobileBertModel.from_pretrained(tmp_path, intermediate_size=256)
    with pytest.raises(FileNotFoundError, match="config.json"):
        mbkernels.MobileBertModel.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    m.config.save(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        mbkernels.MobileBertModel.from_pretrained(tmp_path / "empty")
