"""`mbkernels.from_hf` / `to_hf`: live model objects converted both ways, weights copied or shared."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

import mbkernels
from mbkernels import MobileBertConfig, from_hf, to_hf
from mbkernels.hf import CLASS_NAMES, from_hf_config, to_hf_config
from mbkernels.testing import rel_err

from helpers import padded_batch, small

CONFIG = small(MobileBertConfig.mobilebert(), num_labels=3)


def _first(out) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else next(v for v in out.to_tuple() if isinstance(v, torch.Tensor))


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_round_trip_every_class(name):
    config = small(CONFIG, num_labels=2) if name == "MobileBertForQuestionAnswering" else CONFIG  # start, end
    ours = getattr(mbkernels, name)(config).eval()
    theirs = to_hf(ours, attn_implementation="eager")
    assert type(theirs) is getattr(transformers, name) and not theirs.training
    back = from_hf(theirs)
    assert type(back) is type(ours)
    ids, types, mask = padded_batch(config)
    with torch.no_grad():
        a = _first(ours(ids, attention_mask=mask, token_type_ids=types))
        b = _first(theirs(ids, attention_mask=mask, token_type_ids=types))
        c = _first(back(ids, attention_mask=mask, token_type_ids=types))
    assert rel_err(b, a) <= 1e-4
    assert torch.equal(c, a)
    assert from_hf_config(theirs.config) == config


def test_copy_is_independent_and_share_is_not():
    ours = mbkernels.MobileBertForMaskedLM(CONFIG)
    copied, shared = to_hf(ours), to_hf(ours, share=True)
    word = ours.mobilebert.embeddings.word_embeddings.weight
    assert shared.mobilebert.embeddings.word_embeddings.weight is word
    assert copied.mobilebert.embeddings.word_embeddings.weight is not word
    # Ties survive either way: the MLM decoder is the word embedding, its bias the head's bias.
    for hf_model in (copied, shared):
        assert hf_model.cls.predictions.decoder.weight is hf_model.mobilebert.embeddings.word_embeddings.weight
        assert hf_model.cls.predictions.decoder.bias is hf_model.cls.predictions.bias
    with torch.no_grad():
        word.add_(1.0)
    assert torch.equal(shared.mobilebert.embeddings.word_embeddings.weight, word)
    assert not torch.equal(copied.mobilebert.embeddings.word_embeddings.weight, word)
    back = from_hf(shared, share=True)
    assert back.mobilebert.embeddings.word_embeddings.weight is word
    assert back.cls.predictions.decoder.weight is word


def test_unsupported():
    with pytest.raises(ValueError, match="transformers cannot build"):
        to_hf(mbkernels.MobileBertModel(small(MobileBertConfig.ib_bert_large(), intermediate_size=64,
                                                    intra_bottleneck_size=64)))
    multiple_choice = transformers.MobileBertForMultipleChoice(to_hf_config(CONFIG))
    with pytest.raises(TypeError, match="model: expected one of MobileBertModel"):
        from_hf(multiple_choice)
    with pytest.raises(ValueError, match="hidden_act"):
        from_hf_config(transformers.MobileBertConfig(hidden_act="silu"))
