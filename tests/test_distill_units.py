"""The distillation pieces on their own: each loss against a hand computation, the strategies' schedules,
layer and head maps, the data pipeline on real text, optimizer groups, checkpoints."""

from __future__ import annotations

import math
import os
import random
from collections import Counter

import pytest
import torch
from test_distill_support import bbc_documents

from mbkernels.distill import checkpoint, losses, strategies
from mbkernels.distill.data import (
    PretrainingStream,
    collate,
    corpus_files,
    load_tokenizer,
    mask_tokens,
    split_sentences,
    vocab_of,
    write_corpus,
)
from mbkernels.distill.optim import group_of, param_groups
from mbkernels.distill.teacher import check_layer_map, parse_layer_map, reduce_heads, uniform_layer_map

pytest_plugins = ["test_distill_support"]  # fixtures: bbc_corpus, vocab_dir

NEG = torch.finfo(torch.float32).min


# -- losses, each against a hand computation ---------------------------------------------------------

def test_feature_map_loss_hand_computed():
    # Position 0: student [1, 3] → [-1, 1]; teacher [5, 1] → [1, -1]; squared error mean 4.
    # Position 1: student [2, 2] has zero variance → [0, 0]; teacher [0, 4] → [-1, 1]; mean 1.
    s = torch.tensor([[[1.0, 3.0], [2.0, 2.0]]], requires_grad=True)
    t = torch.tensor([[[5.0, 1.0], [0.0, 4.0]]])
    assert losses.feature_map_loss(s, t).item() == pytest.approx(2.5, rel=1e-6)  # padding counts (default)
    mask = torch.tensor([[True, False]])
    assert losses.feature_map_loss(s, t, mask).item() == pytest.approx(4.0, rel=1e-6)
    losses.feature_map_loss(s, t).backward()
    assert torch.isfinite(s.grad).all()


def test_attention_loss_hand_computed_on_scores_and_log_probs():
    # Query 0: student [0, 0] → (.5, .5); teacher [ln 3, 0] → (.75, .25).
    # Query 1: key 1 masked in both → (1, 0) and (1, 0): KL 0.
    kl0 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    s = torch.tensor([[[[0.0, 0.0], [0.3, NEG]]]], requires_grad=True)
    t = torch.tensor([[[[math.log(3.0), 0.0], [2.0, NEG]]]])
    assert losses.attention_loss(s, t).item() == pytest.approx(kl0 / 2, rel=1e-6)
    assert losses.attention_loss(s, t, torch.tensor([[True, False]])).item() == pytest.approx(kl0, rel=1e-6)
    # A teacher that returns probabilities only: its log, with -inf at masked keys, gives the same loss.
    t_log = torch.tensor([[[[0.75, 0.25], [1.0, 0.0]]]]).log()
    loss = losses.attention_loss(s, t_log)
    assert loss.item() == pytest.approx(kl0 / 2, rel=1e-6)
    loss.backward()
    assert torch.isfinite(s.grad).all()
    # Equal distributions: 0 (a KL, not Google's cross-entropy, which would give the entropy).
    assert losses.attention_loss(t, t).item() == pytest.approx(0.0, abs=1e-7)


def test_mean_variance_loss_hand_computed():
    # Position 0: means 2 and 2 → 0; variances 1 and 4 → |1-4| = 3.
    # Position 1: means 1 and 4 → 9; variances 0 and 1 → 1.
    s = torch.tensor([[[1.0, 3.0], [1.0, 1.0]]])
    t = torch.tensor([[[0.0, 4.0], [3.0, 5.0]]])
    mean, var = losses.mean_variance_loss(s, t)
    assert (mean.item(), var.item()) == pytest.approx((4.5, 2.0), rel=1e-6)
    mean, var = losses.mean_variance_loss(s, t, torch.tensor([[False, True]]))
    assert (mean.item(), var.item()) == pytest.approx((9.0, 1.0), rel=1e-6)


def test_mlm_distillation_loss_hand_computed():
    # Student (.25, .5, .25); teacher (.5, .25, .25); label 1; alpha .5 → target (.25, .625, .125):
    # CE = .25 ln 4 + .625 ln 2 + .125 ln 4 = 1.375 ln 2. The second row is not predicted.
    student = torch.tensor([[0.0, math.log(2.0), 0.0], [5.0, 0.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[math.log(2.0), 0.0, 0.0], [0.0, 0.0, 9.0]])
    labels = torch.tensor([1, losses.IGNORE_INDEX])
    loss = losses.mlm_distillation_loss(student, teacher, labels, alpha=0.5)
    assert loss.item() == pytest.approx(1.375 * math.log(2.0), rel=1e-6)
    loss.backward()
    assert student.grad[1].abs().max() == 0  # an ignored row gets no gradient
    # alpha 0 is plain MLM: -ln .5.
    assert losses.mlm_distillation_loss(student, None, labels, alpha=0.0).item() == pytest.approx(math.log(2.0))
    # Temperature 2: T²·CE(softmax(t/2), log_softmax(s/2)) for the soft half.
    p_t = torch.softmax(teacher[0] / 2, -1)
    log_s = torch.log_softmax(student[0].detach() / 2, -1)
    expected = 0.5 * 4 * float(-(p_t * log_s).sum()) + 0.5 * math.log(2.0)
    got = losses.mlm_distillation_loss(student, teacher, labels, alpha=0.5, temperature=2.0).item()
    assert got == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="alpha"):
        losses.mlm_distillation_loss(student, teacher, labels, alpha=1.5)


def test_nsp_loss_hand_computed():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    assert losses.nsp_loss(logits, torch.tensor([0, 1])).item() == pytest.approx(1.5 * math.log(2.0), rel=1e-6)


# -- teacher ↔ student maps ------------------------------------------------------------------------------

def test_layer_maps():
    assert uniform_layer_map(4, 4) == {1: 1, 2: 2, 3: 3, 4: 4}
    assert uniform_layer_map(2, 6) == {1: 3, 2: 6}                       # TinyBERT: every k-th layer
    assert uniform_layer_map(24, 6) == {j: math.ceil(j / 4) for j in range(1, 25)}  # many-to-one
    assert parse_layer_map("1:2, 2:4") == {1: 2, 2: 4}
    with pytest.raises(ValueError, match="layer_map"):
        parse_layer_map("1-2")
    with pytest.raises(ValueError, match="layer_map.*out of range"):
        check_layer_map({1: 7}, 2, 6)


def test_reduce_heads_averages_probabilities_or_selects():
    p = torch.tensor([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5], [0.1, 0.9]]).view(1, 4, 1, 2)
    avg = reduce_heads(p.log(), 2).exp()
    assert torch.allclose(avg.view(2, 2), torch.tensor([[0.4, 0.6], [0.3, 0.7]]), atol=1e-6)
    picked = reduce_heads(p.log(), 2, head_map=[3, 0]).exp()
    assert torch.allclose(picked.view(2, 2), torch.tensor([[0.1, 0.9], [0.2, 0.8]]), atol=1e-6)
    assert reduce_heads(p.log(), 4) is not None
    with pytest.raises(ValueError, match="head_map"):
        reduce_heads(p.log(), 3)
    with pytest.raises(ValueError, match="head_map"):
        reduce_heads(p.log(), 2, head_map=[0, 9])


# -- strategies ------------------------------------------------------------------------------------------

def test_progressive_schedule_multipliers_and_warmup():
    phases = strategies.progressive(steps_per_layer=20, stage2_steps=10, num_layers=4, layers=[1, 2, 3, 4])
    sched = strategies.Schedule(tuple(phases))
    assert sched.total_steps == 90
    expected = {  # phase → (layer.1, layer.2, layer.3, layer.4, embeddings)
        0: (3.0, 0.0, 0.0, 0.0, 3.0), 1: (0.3, 3.0, 0.0, 0.0, 0.3), 2: (0.3, 0.3, 3.0, 0.0, 0.3),
        3: (0.3, 0.3, 0.3, 3.0, 0.3), 4: (1.0, 1.0, 1.0, 1.0, 1.0)}
    for step, index, inner in [(0, 0, 0), (19, 0, 19), (20, 1, 0), (45, 2, 5), (79, 3, 19), (80, 4, 0), (89, 4, 9)]:
        i, phase, k = sched.at(step)
        assert (i, k) == (index, inner)
        got = tuple(phase.multiplier(g) for g in ("layer.1", "layer.2", "layer.3", "layer.4", "embeddings"))
        assert got == expected[i], (step, phase.name)
        assert phase.multiplier("copied") == (1.0 if i == 4 else 0.0)   # frozen while only layer losses run
        assert phase.multiplier("heads") == (1.0 if i == 4 else 0.0)
        assert phase.layers == ((i + 1,) if i < 4 else ())
        assert phase.mlm == ("distill" if i == 4 else None)
    # Warm-up over 10% of each phase (2 of 20 steps), then constant in layer phases.
    layer_phase, stage2 = phases[1], phases[4]
    assert [layer_phase.lr_factor(k) for k in (0, 1, 2, 19)] == [0.5, 1.0, 1.0, 1.0]
    assert [stage2.lr_factor(k) for k in (0, 1, 5, 9)] == pytest.approx([1.0, 1.0, 5 / 9, 1 / 9])
    with pytest.raises(ValueError, match="step"):
        sched.at(90)


def test_progressive_freezing_and_partial_layer_map():
    frozen = strategies.progressive(10, 0, 3, [1, 2, 3], freeze_finished=True)
    assert [frozen[2].multiplier(f"layer.{j}") for j in (1, 2, 3)] == [0.0, 0.0, 3.0]
    assert len(frozen) == 3  # no stage 2
    # A user map that distils layers 2 and 4 of 4: layer 1 trains with layer 2, layer 3 with layer 4.
    partial = strategies.progressive(10, 0, 4, [2, 4])
    assert [partial[0].multiplier(f"layer.{j}") for j in (1, 2, 3, 4)] == [3.0, 3.0, 0.0, 0.0]
    assert [partial[1].multiplier(f"layer.{j}") for j in (1, 2, 3, 4)] == [0.3, 0.3, 3.0, 3.0]


def test_auxiliary_joint_pretrain_shapes():
    (aux,) = strategies.auxiliary(50, 2, [1, 2])
    assert (aux.layers, aux.mlm, aux.nsp, aux.multiplier("copied"), aux.decay) == ((1, 2), "distill", True, 1.0, "linear")
    joint = strategies.joint(30, 20, 2, [1, 2])
    assert [(p.layers, p.mlm, p.steps) for p in joint] == [((1, 2), None, 30), ((), "distill", 20)]
    assert joint[0].multiplier("heads") == 0.0 and joint[0].multiplier("layer.2") == 1.0
    (pre,) = strategies.pretrain(10, 2)
    assert (pre.layers, pre.mlm, pre.nsp) == ((), "labels", True)
    with pytest.raises(ValueError, match="layers"):
        strategies.auxiliary(5, 2, [3])


# -- optimizer groups ------------------------------------------------------------------------------------

def test_param_groups_follow_the_phase():
    assert group_of("student.mobilebert.encoder.layer.0.attention.self.query.weight", set()) == "layer.1"
    assert group_of("projections.3.weight", set()) == "layer.3"
    assert group_of("student.mobilebert.embeddings.LayerNorm.weight", set()) == "embeddings"
    assert group_of("student.cls.seq_relationship.bias", set()) == "heads"
    assert group_of("student.mobilebert.embeddings.word_embeddings.weight",
                    {"student.mobilebert.embeddings.word_embeddings.weight"}) == "copied"
    named = [("student.mobilebert.encoder.layer.0.output.dense.weight", torch.nn.Parameter(torch.ones(2, 2))),
             ("student.mobilebert.encoder.layer.0.output.dense.bias", torch.nn.Parameter(torch.ones(2))),
             ("student.mobilebert.encoder.layer.1.output.dense.weight", torch.nn.Parameter(torch.ones(2, 2)))]
    phase = strategies.progressive(10, 0, 2, [1, 2])[0]
    groups = param_groups(named, set(), phase, weight_decay=0.01)
    assert sorted((g["group"], g["multiplier"], g["weight_decay"], len(g["params"])) for g in groups) == [
        ("layer.1", 3.0, 0.0, 1), ("layer.1", 3.0, 0.01, 1)]  # layer 2 is not in the optimizer yet


# -- data on real text -------------------------------------------------------------------------------------

def test_split_sentences_and_write_corpus(tmp_path):
    text = 'Mr Smith said "It works." Then he left! Did it? Yes.\n\nNew paragraph here.'
    assert split_sentences(text) == ['Mr Smith said "It works."', "Then he left!", "Did it?", "Yes.",
                                     "New paragraph here."]
    path = tmp_path / "c.txt"
    assert write_corpus(["One. Two.", "", "Three."], path) == 2
    assert path.read_text() == "One.\nTwo.\n\nThree.\n\n"


def test_stream_pairs_nsp_and_resume_on_real_text(bbc_corpus, vocab_dir):
    tok = load_tokenizer(vocab_dir)
    stream = PretrainingStream(corpus_files(bbc_corpus), tok, max_seq_len=64, seed=3)
    v = stream.vocab
    first = [next(stream) for _ in range(200)]
    for e in first:
        assert len(e.input_ids) <= 64 and e.input_ids[0] == v.cls and e.input_ids[-1] == v.sep
        assert e.input_ids.count(v.sep) == 2 and len(e.token_type_ids) == len(e.input_ids)
        sep = e.input_ids.index(v.sep)
        assert e.token_type_ids == [0] * (sep + 1) + [1] * (len(e.input_ids) - sep - 1)
    labels = Counter(e.next_sentence_label for e in first)
    assert 0.35 < labels[1] / 200 < 0.65, labels  # half the second segments come from another document
    assert [e.index for e in first] == list(range(200))
    # Streamed, not loaded: the position is a byte offset inside the file.
    state = stream.state_dict()
    assert 0 < state["offset"] < os.path.getsize(bbc_corpus)
    after = [next(stream) for _ in range(50)]
    again = PretrainingStream(corpus_files(bbc_corpus), tok, max_seq_len=64, seed=3)
    again.load_state_dict(state)
    assert [(e.index, e.input_ids, e.next_sentence_label) for e in (next(again) for _ in range(50))] == \
        [(e.index, e.input_ids, e.next_sentence_label) for e in after]


def test_stream_reads_a_folder_and_wraps_epochs(tmp_path, vocab_dir):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    docs = bbc_documents(4, seed=1)
    write_corpus(docs[:2], folder / "a.txt")
    write_corpus(docs[2:], folder / "sub" / "b.txt")
    files = corpus_files(folder)
    assert [os.path.basename(f) for f in files] == ["a.txt", "b.txt"]
    stream = PretrainingStream(files, load_tokenizer(vocab_dir), max_seq_len=32, seed=0)
    for _ in range(300):  # four short documents: several epochs
        next(stream)
    assert stream.epoch >= 1
    with pytest.raises(FileNotFoundError, match="corpus"):
        corpus_files(tmp_path / "missing")
    (tmp_path / "blank.txt").write_text("\n\n   \n")
    with pytest.raises(ValueError, match="corpus: no text"):
        next(PretrainingStream([str(tmp_path / "blank.txt")], load_tokenizer(vocab_dir)))


def test_masking_80_10_10(vocab_dir):
    v = vocab_of(load_tokenizer(vocab_dir))
    rng = random.Random(0)
    ids = [v.cls] + list(range(2000, 2100)) + [v.sep]
    counts = Counter()
    for _ in range(300):
        inputs, labels = mask_tokens(ids, v, rng)
        chosen = [i for i, lab in enumerate(labels) if lab != losses.IGNORE_INDEX]
        assert len(chosen) == 15  # round(15% of 100 non-special tokens)
        assert labels[0] == labels[-1] == losses.IGNORE_INDEX and inputs[0] == v.cls
        for i in chosen:
            assert labels[i] == ids[i]
            counts["mask" if inputs[i] == v.mask else "same" if inputs[i] == ids[i] else "random"] += 1
        assert all(inputs[i] == ids[i] for i in range(len(ids)) if i not in chosen)
    n = sum(counts.values())
    assert abs(counts["mask"] / n - 0.8) < 0.03 and abs(counts["random"] / n - 0.1) < 0.02, counts


def test_collate_dynamic_padding_and_seeded_masking(bbc_corpus, vocab_dir):
    tok = load_tokenizer(vocab_dir)
    stream = PretrainingStream(corpus_files(bbc_corpus), tok, max_seq_len=64, seed=0, short_seq_prob=1.0)
    examples = [next(stream) for _ in range(6)]
    batch = collate(examples, stream.vocab, seed=5, max_seq_len=64, pad_to_multiple_of=8)
    longest = max(len(e.input_ids) for e in examples)
    assert batch["input_ids"].shape == (6, min(64, math.ceil(longest / 8) * 8))
    assert batch["attention_mask"].sum(1).tolist() == [len(e.input_ids) for e in examples]
    pad = batch["attention_mask"] == 0
    assert (batch["input_ids"][pad] == stream.vocab.pad).all() and (batch["labels"][pad] == -100).all()
    assert batch["next_sentence_label"].tolist() == [e.next_sentence_label for e in examples]
    # The same example is masked the same way in any batch (seed + its index), differently per seed.
    alone = collate(examples[2:3], stream.vocab, seed=5, max_seq_len=64)
    n = len(examples[2].input_ids)
    assert torch.equal(alone["input_ids"][0, :n], batch["input_ids"][2, :n])
    other = collate(examples[2:3], stream.vocab, seed=6, max_seq_len=64)
    assert not torch.equal(other["labels"][0, :n], alone["labels"][0, :n])
    fixed = collate(examples, stream.vocab, seed=5, max_seq_len=64, pad_to_multiple_of=64)
    assert fixed["input_ids"].shape == (6, 64)


# -- checkpoints ---------------------------------------------------------------------------------------------

def test_checkpoints_are_atomic_and_pruned(tmp_path, monkeypatch):
    for step in (1, 2, 3):
        checkpoint.save({"step": step, "w": torch.ones(3) * step}, tmp_path, step, keep=2)
    assert [os.path.basename(p) for p in checkpoint.list_checkpoints(tmp_path)] == ["step-00000002.pt",
                                                                                   "step-00000003.pt"]

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save({"step": 4}, tmp_path, 4)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["step-00000002.pt", "step-00000002.pt.sha256", "step-00000003.pt",
                                            "step-00000003.pt.sha256"]  # no partial file
    assert checkpoint.load(checkpoint.latest(tmp_path))["step"] == 3
    (tmp_path / "step-00000009.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="resume: could not read"):
        checkpoint.load(tmp_path / "step-00000009.pt")
