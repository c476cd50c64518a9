"""The IB-BERT teacher (HF cannot build it: Q/K/V read the 512-wide input projected to 1024)."""

import dataclasses

import pytest
import torch

import mbkernels
from mbkernels import MobileBertConfig, MobileBertForPreTraining, MobileBertModel
from mbkernels.testing import rel_err


def test_full_size_teacher_builds_runs_and_trains():
    teacher = MobileBertForPreTraining(MobileBertConfig.ib_bert_large()).train()
    n = teacher.mobilebert.num_parameters()
    print(f"IB-BERT-large parameters: {n:,} backbone, {teacher.num_parameters():,} with MLM/NSP heads")
    assert 290e6 < n < 298e6  # ~294M by the paper's design
    layer = teacher.mobilebert.encoder.layer[0]
    assert layer.attention.self.query.weight.shape == (1024, 512)
    assert layer.attention.self.value.weight.shape == (1024, 512)
    ids = torch.randint(1, 30522, (1, 8))
    out = teacher(ids, labels=ids, next_sentence_label=torch.tensor([0]), output_attention_scores=True)
    assert out.attention_scores[0].shape == (1, 4, 8, 8)
    out.loss.backward()
    assert teacher.mobilebert.encoder.layer[23].attention.self.key.weight.grad.abs().sum() > 0


def _small_teacher():
    return dataclasses.replace(MobileBertConfig.ib_bert_large(), num_hidden_layers=2, vocab_size=500,
                               intra_bottleneck_size=64, intermediate_size=256, hidden_size=128,
                               embedding_size=32, attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0)


def test_scaled_teacher_matches_an_explicit_computation():
    """Invariant: the teacher's attention is plain multi-head attention over h with a bottleneck
    residual; recompute one layer by hand and compare."""
    model = MobileBertModel(_small_teacher(), add_pooling_layer=False).eval()
    h = torch.randn(2, 5, 128, dtype=torch.float64)
    model.double()
    layer = model.encoder.layer[0]
    F = torch.nn.functional
    ln = lambda x, m: F.layer_norm(x, (x.shape[-1],), m.weight, m.bias, m.eps)  # noqa: E731
    b = ln(layer.bottleneck.input.dense(h), layer.bottleneck.input.LayerNorm)
    sa = layer.attention.self
    split = lambda x: x.view(2, 5, 4, 16).transpose(1, 2)  # noqa: E731
    q, k, v = split(sa.query(h)), split(sa.key(h)), split(sa.value(h))
    ctx = torch.softmax(q @ k.transpose(-1, -2) / 4.0, -1) @ v
    a = ln(layer.attention.output.dense(ctx.transpose(1, 2).reshape(2, 5, 64)) + b, layer.attention.output.LayerNorm)
    a = ln(layer.output.dense(F.gelu(layer.intermediate.dense(a))) + a, layer.output.LayerNorm)
    expected = ln(layer.output.bottleneck.dense(a) + h, layer.output.bottleneck.LayerNorm)
    for backend in ("reference", "fused"):
        with mbkernels.use_backend(backend):
            got, _ = layer(h)
        assert rel_err(got, expected) <= 1e-10, backend


def test_scaled_teacher_fused_equals_reference_with_gradients():
    model = MobileBertForPreTraining(_small_teacher()).train()
    ids = torch.randint(1, 500, (2, 7))
    grads = {}
    for backend in ("reference", "fused"):
        model.zero_grad()
        with mbkernels.use_backend(backend):
            out = model(ids, labels=ids, next_sentence_label=torch.tensor([0, 1]))
            out.loss.backward()
        grads[backend] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    for name, g in grads["reference"].items():
        if name.endswith("key.bias"):
            continue  # analytically zero; both sides hold rounding noise
        assert rel_err(grads["fused"][name], g) <= 1e-4, name


def test_teacher_student_share_the_interface():
    teacher, student = MobileBertConfig.ib_bert_large(), MobileBertConfig.mobilebert()
    assert teacher.hidden_size == student.hidden_size == 512
    assert teacher.embedding_size == student.embedding_size
    with pytest.raises(ValueError, match="num_attention_heads"):
        MobileBertConfig.ib_bert_large(num_attention_heads=3)


def test_student_parameter_count_is_the_released_one():
    """24,581,888 backbone parameters without a pooler (the paper rounds to 25.3M with heads)."""
    assert MobileBertModel(MobileBertConfig.mobilebert(), add_pooling_layer=False).num_parameters() == 24_581_888
