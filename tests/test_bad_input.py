"""Bad input to the model gets an exception that names the argument, the expected and the received."""

import pytest
import torch

from mbkernels import MobileBertConfig, MobileBertModel

from helpers import small


@pytest.fixture(scope="module")
def model():
    return MobileBertModel(small(MobileBertConfig.mobilebert(), max_position_embeddings=16)).eval()


@pytest.mark.parametrize("kwargs,exc,needles", [
    ({"input_ids": torch.tensor([[1, 2, 1000]])}, ValueError, ["input_ids", "[0, 1000)", "1000"]),
    ({"input_ids": torch.tensor([[1, -1]])}, ValueError, ["input_ids", "-1"]),
    ({"input_ids": torch.ones(1, 17, dtype=torch.long)}, ValueError, ["input_ids", "16", "17"]),
    ({"input_ids": torch.ones(1, 0, dtype=torch.long)}, ValueError, ["input_ids", "length 0"]),
    ({"input_ids": torch.ones(2, 4)}, TypeError, ["input_ids", "integer", "torch.float32"]),
    ({"input_ids": torch.ones(2, 4, dtype=torch.long), "attention_mask": torch.ones(2, 5)}, ValueError,
     ["attention_mask", "(2, 4)", "(2, 5)"]),
    ({"input_ids": torch.ones(2, 4, dtype=torch.long), "attention_mask": torch.full((2, 4), 0.5)}, ValueError,
     ["attention_mask", "0 or 1", "0.5"]),
    ({"input_ids": torch.ones(2, 4, dtype=torch.long), "token_type_ids": torch.full((2, 4), 2)}, ValueError,
     ["token_type_ids", "[0, 2)", "2"]),
    ({"input_ids": torch.ones(2, 4, dtype=torch.long), "token_type_ids": torch.zeros(2, 3, dtype=torch.long)},
     ValueError, ["token_type_ids", "(2, 4)", "(2, 3)"]),
    ({}, ValueError, ["input_ids", "neither"]),
])
def test_bad_model_input(model, kwargs, exc, needles):
    with pytest.raises(exc) as e:
        model(**kwargs)
    for needle in needles:
        assert needle in str(e.value), (needle, str(e.value))


def test_masks_in_every_accepted_form_agree(model):
    ids = torch.randint(1, 1000, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        outs = [model(ids, attention_mask=m).last_hidden_state for m in (mask, mask.float(), mask.bool())]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_wrong_config_type():
    with pytest.raises(TypeError, match="config"):
        MobileBertModel({"hidden_size": 512})
