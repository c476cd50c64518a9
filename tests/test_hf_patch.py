"""`mbkernels.patch_hf`: a real transformers MobileBERT, patched in place, against itself unpatched.

Outputs (logits, all hidden states, attention probabilities) ≤ 1e-4 per-row relative error in fp32;
parameter gradients of the patched fp32 model against the float64 truth (the unpatched HF model in
float64), no less accurate than HF's own fp32 gradients (bound as in test_hf_parity.py); every config
variant HF can build; teacher/student independence; unpatch restores bit-identical behaviour.
"""

import copy
import io

import pytest
import torch

transformers = pytest.importorskip("transformers")

import mbkernels
from mbkernels import MobileBertConfig, MobileBertForPreTraining, MobileBertModel, patch_hf, unpatch_hf
from mbkernels.patch import is_patched, key_mask_of
from mbkernels.testing import realistic_init_, rel_err

from helpers import hf_twin, padded_batch, small
from test_hf_parity import VARIANTS

TOL = 1e-4


def _twin(config: MobileBertConfig, cls: str = "MobileBertForPreTraining", **overrides):
    """An HF model (eager attention, dropout off, train mode) with our initialisation, and the config."""
    config = small(config, attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0, **overrides)
    ours = getattr(mbkernels, cls)(config).train()
    return hf_twin(ours, cls), config


def _run(model, config, **kwargs):
    ids, types, mask = padded_batch(config)
    return model(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True,
                 output_attentions=True, **kwargs)


def _loss(out) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    logits = out.prediction_logits
    return ((logits * torch.randn(logits.shape, generator=g, dtype=logits.dtype)).sum()
            + (out.seq_relationship_logits * torch.randn(2, generator=g, dtype=logits.dtype)).sum())


def _outputs(out) -> dict[str, torch.Tensor]:
    found = {"prediction_logits": out.prediction_logits, "seq_relationship_logits": out.seq_relationship_logits}
    found |= {f"hidden_states[{i}]": h for i, h in enumerate(out.hidden_states)}
    found |= {f"attentions[{i}]": a for i, a in enumerate(out.attentions)}
    return found


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_patched_matches_unpatched(name):
    theirs, config = _twin(VARIANTS[name])
    patched = patch_hf(copy.deepcopy(theirs))
    truth = copy.deepcopy(theirs).double()

    mbkernels.backend.last_ran.clear()
    a, b = _run(patched, config), _run(theirs, config)
    assert mbkernels.backend.last_ran["ffn_stack"].startswith("cpu:") or mbkernels.backend._C is None
    assert mbkernels.backend.last_ran["bottleneck_attention"] != ""
    expected = _outputs(b)
    got = _outputs(a)
    assert got.keys() == expected.keys()
    assert len(a.hidden_states) == config.num_hidden_layers + 1 and len(a.attentions) == config.num_hidden_layers
    errors = {k: rel_err(got[k], expected[k]) for k in expected}

    _loss(a).backward()
    _loss(b).backward()
    _loss(_run(truth, config)).backward()
    mine, hf32, hf64 = _grads(patched), _grads(theirs), _grads(truth)
    assert mine.keys() == hf32.keys()
    bounds = {}
    for key in hf64:
        if key.endswith("attention.self.key.bias"):  # analytically zero (softmax ignores a per-row shift)
            scale = hf64[key.replace("bias", "weight")].norm()
            assert mine[key].norm() <= 1e-4 * scale, key
            continue
        errors[f"grad {key}"] = rel_err(mine[key], hf64[key])
        bounds[f"grad {key}"] = max(TOL, 2 * rel_err(hf32[key], hf64[key]))
    worst = max(errors, key=lambda k: errors[k] / bounds.get(k, TOL))
    assert errors[worst] <= bounds.get(worst, TOL), f"{worst}: {errors[worst]:.3g} > {bounds.get(worst, TOL):.3g}"


def test_realistic_scale_float64_gradients():
    """Activations at 1e5–1e7; gradients in float64 (fp32 ones cancel there: see test_hf_parity)."""
    ours = MobileBertForPreTraining(small(VARIANTS["mobilebert"], num_hidden_layers=4,
                                          attention_probs_dropout_prob=0.0)).train()
    realistic_init_(ours)
    theirs = hf_twin(ours, "MobileBertForPreTraining").double()
    patched = patch_hf(copy.deepcopy(theirs))
    a, b = _run(patched, ours.config), _run(theirs, ours.config)
    assert a.hidden_states[-1].abs().max() > 1e5
    for k, v in _outputs(b).items():
        assert rel_err(_outputs(a)[k], v) <= 1e-10, k
    _loss(a).backward()
    _loss(b).backward()
    theirs_grads = _grads(theirs)
    for k, g in _grads(patched).items():
        if not k.endswith("key.bias"):
            assert rel_err(g, theirs_grads[k]) <= TOL, k


def test_realistic_scale_fp32_inference():
    ours = MobileBertModel(small(VARIANTS["mobilebert"], num_hidden_layers=4)).eval()
    realistic_init_(ours)
    theirs = hf_twin(ours, "MobileBertModel")
    patched = patch_hf(copy.deepcopy(theirs))
    ids, types, mask = padded_batch(ours.config)
    with torch.inference_mode():
        a = patched(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        b = theirs(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    assert b.abs().max() > 1e5
    assert rel_err(a, b) <= TOL


def test_hf_api_kept():
    """return_dict=False, output flags from the config, the default "sdpa" attention, labels → loss."""
    theirs, config = _twin(VARIANTS["mobilebert"], "MobileBertForMaskedLM")
    theirs.eval()
    ids, types, mask = padded_batch(config)
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
    sdpa = copy.deepcopy(theirs)
    sdpa.set_attn_implementation("sdpa")
    patched = patch_hf(copy.deepcopy(sdpa))
    with torch.no_grad():
        loss_a, logits_a = patched(ids, attention_mask=mask, labels=labels, return_dict=False)
        loss_b, logits_b = sdpa(ids, attention_mask=mask, labels=labels, return_dict=False)
        assert rel_err(logits_a, logits_b) <= TOL
        assert abs(loss_a.item() - loss_b.item()) <= TOL * abs(loss_b.item())

        patched = patch_hf(copy.deepcopy(theirs))  # eager: HF allows output_attentions in its config
        patched.config.output_attentions = True  # from the config, no keyword: HF's own rule
        patched.config.output_hidden_states = True
        out = patched(ids, attention_mask=mask)
        ref = theirs(ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == len(ref.attentions) == config.num_hidden_layers
    for x, y in zip(out.attentions + out.hidden_states, ref.attentions + ref.hidden_states, strict=True):
        assert rel_err(x, y) <= TOL


def test_teacher_and_student_stay_independent():
    teacher, tconfig = _twin(VARIANTS["mobilebert_no_opt"])
    student, sconfig = _twin(VARIANTS["mobilebert_tiny"])
    layer_class = type(student.mobilebert.encoder.layer[0])
    class_forward = layer_class.forward
    before = _run(teacher, tconfig).prediction_logits.detach()
    patch_hf(student)
    assert is_patched(student) and not is_patched(teacher)
    assert layer_class.forward is class_forward
    assert all("forward" not in m.__dict__ for m in teacher.modules())
    assert torch.equal(_run(teacher, tconfig).prediction_logits, before)
    mbkernels.backend.last_ran.clear()
    _run(student, sconfig)
    assert "ffn_stack" in mbkernels.backend.last_ran


def test_unpatch_restores_exactly():
    theirs, config = _twin(VARIANTS["mobilebert"])
    before = _outputs(_run(theirs, config))
    attributes = {name: set(m.__dict__) for name, m in theirs.named_modules()}  # after HF's hooks went in
    patch_hf(theirs)
    assert patch_hf(theirs) is theirs  # patching twice changes nothing
    assert is_patched(theirs)
    mbkernels.backend.last_ran.clear()
    _run(theirs, config)
    assert mbkernels.backend.last_ran
    unpatch_hf(theirs)
    assert not is_patched(theirs)
    assert {name: set(m.__dict__) for name, m in theirs.named_modules()} == attributes
    mbkernels.backend.last_ran.clear()
    after = _outputs(_run(theirs, config))
    assert not mbkernels.backend.last_ran  # no mbkernels op ran
    assert all(torch.equal(after[k], before[k]) for k in before)
    with pytest.raises(ValueError, match="model: expected a model patched"):
        unpatch_hf(theirs)


def test_patched_model_follows_its_weights():
    """The views hold HF's own dicts: loaded weights, deepcopies, pickling and optimizer steps work."""
    theirs, config = _twin(VARIANTS["mobilebert"])
    patched = patch_hf(copy.deepcopy(theirs))
    clone = copy.deepcopy(patched)
    assert is_patched(clone)
    buffer = io.BytesIO()
    torch.save(patched, buffer)  # a whole patched model pickles and comes back patched
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert is_patched(loaded)
    with torch.no_grad():
        assert torch.equal(_run(loaded, config).prediction_logits, _run(patched, config).prediction_logits)
    opt = torch.optim.SGD(patched.parameters(), lr=1e-2)
    _loss(_run(patched, config)).backward()
    opt.step()
    reference = copy.deepcopy(theirs)
    reference.load_state_dict(patched.state_dict())
    with torch.no_grad():
        assert rel_err(_run(patched, config).prediction_logits, _run(reference, config).prediction_logits) <= TOL
        clone.load_state_dict(patched.state_dict())
        assert rel_err(_run(clone, config).prediction_logits, _run(reference, config).prediction_logits) <= TOL


def test_gradient_checkpointing():
    theirs, config = _twin(VARIANTS["mobilebert"])
    plain = patch_hf(copy.deepcopy(theirs))
    checkpointed = patch_hf(copy.deepcopy(theirs))
    checkpointed.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    calls = []
    for layer in checkpointed.mobilebert.encoder.layer:
        checkpoint = layer._gradient_checkpointing_func
        layer._gradient_checkpointing_func = lambda *a, f=checkpoint, **k: calls.append(1) or f(*a, **k)
    _loss(_run(plain, config)).backward()
    _loss(_run(checkpointed, config)).backward()
    assert len(calls) == config.num_hidden_layers
    expected = _grads(plain)
    for k, g in _grads(checkpointed).items():
        assert torch.allclose(g, expected[k], rtol=1e-6, atol=0), k
    assert expected.keys() == _grads(checkpointed).keys()


def test_key_mask_of_hf_masks():
    from transformers.masking_utils import create_bidirectional_mask

    theirs, config = _twin(VARIANTS["mobilebert"], "MobileBertModel")
    ids, _, mask = padded_batch(config)
    embeds = torch.zeros(*ids.shape, config.hidden_size)
    for implementation in ("eager", "sdpa"):
        theirs.set_attn_implementation(implementation)
        prepared = create_bidirectional_mask(config=theirs.config, inputs_embeds=embeds, attention_mask=mask)
        assert torch.equal(key_mask_of(prepared, ids.shape), mask.bool())
    assert key_mask_of(None, ids.shape) is None
    causal = torch.tril(torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool)).expand(ids.shape[0], 1, -1, -1)
    with pytest.raises(ValueError, match="attention_mask: expected a padding mask"):
        key_mask_of(causal, ids.shape)
    with pytest.raises(ValueError, match="attention_mask: expected an additive mask"):
        key_mask_of(torch.full((ids.shape[0], 1, ids.shape[1], ids.shape[1]), -1.0), ids.shape)
    with pytest.raises(ValueError, match="attention_mask: expected shape"):
        key_mask_of(torch.ones(1, 1, 3, 3), ids.shape)


def test_bad_input():
    with pytest.raises(TypeError, match="model: expected a transformers MobileBert"):
        patch_hf(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
        patch_hf("mobilebert")
    hc = transformers.MobileBertConfig(num_hidden_layers=1, vocab_size=100, hidden_act="gelu_new")
    with pytest.raises(ValueError, match="hidden_act"):
        patch_hf(transformers.MobileBertModel(hc))
    theirs, _ = _twin(VARIANTS["mobilebert"], "MobileBertModel")
    theirs.encoder.layer[0].ffn = theirs.encoder.layer[0].ffn[:1]  # edited after construction
    with pytest.raises(ValueError, match="model: expected the parameters its config describes"):
        patch_hf(theirs)
    assert not is_patched(theirs)


def test_inference_runs_the_whole_encoder_unless_layers_are_observed():
    """No grad, no per-layer outputs, no user hooks: mbkernels' encoder (one ops.encoder call on CPU
    fp32); a hook on a layer or requested hidden states bring back the per-layer HF calls."""
    ours = MobileBertModel(small(VARIANTS["mobilebert"], num_hidden_layers=3)).eval()
    realistic_init_(ours)
    theirs = hf_twin(ours, "MobileBertModel")
    patched = patch_hf(copy.deepcopy(theirs))
    ids, types, mask = padded_batch(ours.config)
    one_op = mbkernels.backend._C is not None

    def run(model, **kwargs):
        mbkernels.backend.last_ran.clear()
        with torch.no_grad():
            return model(ids, attention_mask=mask, token_type_ids=types, **kwargs)

    expected = run(theirs).last_hidden_state
    for requested in ({}, {"output_hidden_states": True}, {}):  # HF's capture hooks stay after a request
        out = run(patched, **requested)
        assert rel_err(out.last_hidden_state, expected) <= TOL
        assert ("encoder" in mbkernels.backend.last_ran) == (one_op and not requested)
    assert len(out.hidden_states if requested else run(patched, output_hidden_states=True).hidden_states) == 4
    seen = []
    handle = patched.encoder.layer[1].register_forward_hook(lambda module, args, output: seen.append(output))
    assert rel_err(run(patched).last_hidden_state, expected) <= TOL
    assert len(seen) == 1 and "encoder" not in mbkernels.backend.last_ran
    handle.remove()
    run(patched)
    assert ("encoder" in mbkernels.backend.last_ran) == one_op
