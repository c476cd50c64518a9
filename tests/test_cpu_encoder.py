"""The one-op encoder (ops.encoder, `_C.encoder_forward`): the modules use it for CPU fp32
inference without gradients, scores or hidden states, and it matches the per-op path (the same
kernels: to the bit) and the float64 reference for every model variant; the other cases keep the
per-op path; the op itself passes opcheck and rejects malformed weight lists."""

import pytest
import torch

import mbkernels
from mbkernels import backend, ops
from mbkernels.ops import _packed
from mbkernels.config import MobileBertConfig
from mbkernels.modeling import MobileBertModel
from mbkernels.testing import rel_err

_C = pytest.importorskip("mbkernels._C", reason="mbkernels._C is not built")

VARIANTS = {
    "mobilebert": lambda: MobileBertConfig.mobilebert(num_hidden_layers=2),
    "no_opt": lambda: MobileBertConfig.mobilebert_no_opt(num_hidden_layers=2),
    "tiny": lambda: MobileBertConfig.mobilebert_tiny(num_hidden_layers=2),
    "teacher": lambda: MobileBertConfig.ib_bert_large(num_hidden_layers=1),
    "no_bottleneck": lambda: MobileBertConfig.mobilebert(num_hidden_layers=2, use_bottleneck=False,
                                                         key_query_shared_bottleneck=False),
}


def _inputs(cfg, b=2, s=19):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, cfg.vocab_size, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.long)
    mask[1, 11:] = 0
    return ids, mask


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_model_inference_uses_one_op_and_matches(variant, isa):
    torch.manual_seed(0)
    cfg = VARIANTS[variant]()
    model = MobileBertModel(cfg).eval()
    ids, mask = _inputs(cfg)
    backend.last_ran.clear()
    with torch.no_grad():
        per_op = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).last_hidden_state
        assert "encoder" not in backend.last_ran
        one = model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert backend.last_ran["encoder"] == f"cpu:{isa}"
    assert rel_err(one, per_op) <= 1e-5
    model64 = MobileBertModel(cfg).eval()
    model64.load_state_dict(model.state_dict())
    with torch.no_grad(), mbkernels.use_backend("reference"):
        ref = model64.double()(input_ids=ids, attention_mask=mask).last_hidden_state
    assert rel_err(one, ref) <= 1e-4


def test_training_gradients_and_scores_keep_the_per_op_path():
    cfg = VARIANTS["mobilebert"]()
    model = MobileBertModel(cfg).eval()
    ids, mask = _inputs(cfg)
    backend.last_ran.clear()
    model(input_ids=ids, attention_mask=mask)  # grad enabled
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, output_attention_scores=True)
        model.train()
        model(input_ids=ids, attention_mask=mask)
    assert "encoder" not in backend.last_ran


def test_inference_mode_and_packed_weights_reused():
    cfg = VARIANTS["mobilebert"]()
    model = MobileBertModel(cfg).eval()
    ids, mask = _inputs(cfg)
    with torch.inference_mode():
        first = model(input_ids=ids, attention_mask=mask).last_hidden_state
        packs = _packed.stats()["packs"]
        second = model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert _packed.stats()["packs"] == packs
    assert torch.equal(first, second)


def _layer_weights(cfg, model):
    empty = torch.empty(0)
    return [t.detach() for layer in model.encoder.layer for t in layer.encoder_weights(empty)]


def test_opcheck():
    cfg = MobileBertConfig.mobilebert(num_hidden_layers=1, hidden_size=64, intra_bottleneck_size=16,
                                      intermediate_size=32, num_attention_heads=2, embedding_size=16)
    model = MobileBertModel(cfg).eval()
    h = torch.randn(2, 5, 64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    args = (h, mask, _layer_weights(cfg, model), 1, 2, "shared", "nonorm", "relu", 1e-12,
            [1e-12] * 3 + [1e-5], True)
    for save in (False, True):
        torch.library.opcheck(ops.OPS["encoder"].op, (*args, save))
    assert backend.last_ran["encoder"] == f"cpu:{_C.get_isa()}"


def test_bad_weight_list():
    cfg = VARIANTS["mobilebert"]()
    model = MobileBertModel(cfg).eval()
    weights = _layer_weights(cfg, model)
    h = torch.randn(1, 4, 512)
    with pytest.raises(ValueError, match="weights: expected 46 tensors per layer x 2 layers, got 91"):
        ops.encoder(h, None, weights[:-1], 2, 4)
    args = (2, 4, "shared", "nonorm", "relu", 1e-12, [1e-12] * 3 + [1e-5], True, False)
    with pytest.raises(ValueError, match="weights: expected 46 tensors per layer x 2 layers, got 91"):
        torch.ops.mbkernels.encoder(h, None, weights[:-1], *args)
    broken = list(weights)
    broken[46 + 4] = torch.empty(0)  # layer 1's attention_weight, absent where mode shared needs it
    with pytest.raises(ValueError, match=r"encoder: weights\[layer 1\] attention_weight: expected a tensor of shape"):
        torch.ops.mbkernels.encoder(h, None, broken, *args)
    broken = list(weights)
    broken[18 + 2] = weights[18 + 2][:, :7]  # layer 0's first FFN W2 [128, 512] cut to 7 columns
    with pytest.raises(ValueError, match=r"encoder: weights\[layer 0\] output_weights\[0\]: expected shape"):
        torch.ops.mbkernels.encoder(h, None, broken, *args)


def test_weight_list_checked_again_when_a_weight_is_re_viewed():
    """The weight list is validated once per weight set (same tensors, versions, shapes, strides):
    a weight narrowed through `.data` keeps its version counter, and the next call must still reject
    it rather than let the kernel read past it."""
    cfg = VARIANTS["mobilebert"]()
    model = MobileBertModel(cfg).eval()
    weights = [t.detach() for t in _layer_weights(cfg, model)]
    h = torch.randn(1, 4, 512)
    args = (2, 4, "shared", "nonorm", "relu", 1e-12, [1e-12] * 3 + [1e-5], True)
    with torch.inference_mode():
        ops.encoder(h, None, weights, *args)
        ops.encoder(h, None, weights, *args)  # the same weight set: found, not checked again
    w2 = weights[18 + 2]  # layer 0's first FFN W2 [128, 512]
    version = w2._version
    w2.data = w2.data[:, :7]
    assert w2._version == version
    with pytest.raises(ValueError, match=r"encoder: weights\[layer 0\] output_weights\[0\]: expected shape"):
        with torch.inference_mode():
            ops.encoder(h, None, weights, *args)


def test_in_place_weight_update_reaches_the_one_op_path():
    """The encoder's prepared layer arguments are reused between calls; an in-place write to a weight
    (an optimizer step, load_state_dict) makes the next call rebuild them."""
    cfg = VARIANTS["mobilebert"]()
    model = MobileBertModel(cfg).eval()
    ids, mask = _inputs(cfg)
    with torch.no_grad():
        first = model(input_ids=ids, attention_mask=mask).last_hidden_state
        model.encoder.layer[1].ffn[0].intermediate.dense.weight.mul_(-0.5)
        second = model(input_ids=ids, attention_mask=mask).last_hidden_state
        assert backend.last_ran["encoder"] == f"cpu:{_C.get_isa()}"
        per_op = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).last_hidden_state
    assert not torch.equal(first, second)
    assert rel_err(second, per_op) <= 1e-5


def _weights_by_attribute(layer):
    """The layer's weights found by plain attribute access, as a reader of the HF names would."""
    from functools import reduce

    from mbkernels.modeling import _weight_paths
    return [None if p is None else reduce(getattr, p.split("."), layer) for p in _weight_paths(layer.config)]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_layer_weights_follow_replaced_parameters_modules_and_parametrizations(variant):
    """A layer finds its weights through the modules' parameter dicts, located once: a replaced
    parameter, a replaced submodule, a bias removed and a parametrized weight must all be what the
    next call reads, and what the model computes with."""
    import torch.nn.utils.parametrize as parametrize

    cfg = VARIANTS[variant]()
    model = MobileBertModel(cfg).eval()
    layer = model.encoder.layer[0]
    ids, mask = _inputs(cfg)
    assert layer.weights() == _weights_by_attribute(layer)
    q = layer.attention.self.query
    q.weight = torch.nn.Parameter(torch.randn_like(q.weight) * 0.02)
    assert layer.weights()[8] is q.weight
    out = layer.output
    out.dense = torch.nn.Linear(out.dense.in_features, out.dense.out_features)
    assert layer.weights() == _weights_by_attribute(layer)
    layer.attention.self.key.bias = None
    assert layer.weights()[11] is None

    class Double(torch.nn.Module):
        def forward(self, w):
            return 2 * w

    parametrize.register_parametrization(layer.attention.self.value, "weight", Double())
    got, want = layer.weights(), _weights_by_attribute(layer)
    assert all((g is None and w is None) or torch.equal(g, w) for g, w in zip(got, want, strict=True))
    with torch.no_grad():
        fused = model(input_ids=ids, attention_mask=mask).last_hidden_state
        with mbkernels.use_backend("reference"):
            reference = model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert rel_err(fused, reference) <= 1e-4


@pytest.mark.parametrize("fused", [True, False])
def test_optimizer_step_reaches_the_packed_weights(fused):
    """Inference, a training step, inference again: the second inference computes with the stepped
    weights. torch's fused optimizers write the parameters without bumping their version counters
    (which the packed-weight stamps read); mbkernels bumps them after such a step."""
    cfg = VARIANTS["mobilebert"]()
    model = MobileBertModel(cfg)
    ids, mask = _inputs(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=fused or None)
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).last_hidden_state
    model.train()
    model(input_ids=ids, attention_mask=mask).last_hidden_state.square().mean().backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        after = model(input_ids=ids, attention_mask=mask).last_hidden_state
        per_op = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).last_hidden_state
        with mbkernels.use_backend("reference"):
            reference = model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert not torch.equal(before, after)
    assert rel_err(after, reference) <= 1e-4
    assert rel_err(per_op, reference) <= 1e-4
