"""The student's embeddings projected from a Hugging Face teacher's (mbkernels.distill.embeddings)."""

from __future__ import annotations

import pytest
import torch
from test_distill_support import minilm_dir

from mbkernels import MobileBertConfig
from mbkernels.distill import TrainConfig, Trainer, load_teacher
from mbkernels.distill.embeddings import project_embeddings
from mbkernels.heads import MobileBertForPreTraining
from mbkernels.testing import rel_err

pytest_plugins = ["test_distill_support"]  # fixtures: bbc_corpus, vocab_dir


@pytest.fixture(scope="module")
def minilm():
    return load_teacher(minilm_dir()).model


def embedding_sums(student, teacher, ids, types):
    """(student's embedding output, first 384 channels; the teacher's word + position + type sum)."""
    t = teacher.base_model.embeddings
    with torch.no_grad():
        mine = student.mobilebert.embeddings(ids, types)[..., : t.word_embeddings.weight.shape[1]]
        theirs = t.word_embeddings(ids) + t.position_embeddings.weight[: ids.shape[1]] + t.token_type_embeddings(types)
    return mine, theirs


def test_full_rank_projection_reproduces_the_teacher_sum(minilm):
    """With embedding_size = the teacher's width the PCA keeps everything: the student's embedding sum is
    the teacher's (before its LayerNorm), and the extra channels are zero."""
    student = MobileBertForPreTraining(MobileBertConfig.mobilebert(num_hidden_layers=1, embedding_size=384))
    names = project_embeddings(student, minilm)
    assert "mobilebert.embeddings.word_embeddings.weight" in names
    ids, types = torch.randint(1000, 30000, (2, 9)), torch.tensor([[0] * 5 + [1] * 4] * 2)
    mine, theirs = embedding_sums(student, minilm, ids, types)
    assert rel_err(mine, theirs) < 1e-5
    with torch.no_grad():
        assert student.mobilebert.embeddings(ids, types)[..., 384:].abs().max() == 0


def test_truncated_projection_is_the_best_of_its_rank(minilm):
    student = MobileBertForPreTraining(MobileBertConfig.mobilebert(num_hidden_layers=1))  # embedding_size 128
    project_embeddings(student, minilm)
    word = minilm.base_model.embeddings.word_embeddings.weight.detach()
    e = student.mobilebert.embeddings
    rebuilt = e.word_embeddings.weight @ e.embedding_transformation.weight[:384, 128:256].T + \
        e.embedding_transformation.bias[:384]
    err_pca = (rebuilt - word).norm()
    q, _ = torch.linalg.qr(torch.randn(384, 128, generator=torch.Generator().manual_seed(0)))
    mean = word.mean(0)
    err_random = ((word - mean) @ q @ q.T + mean - word).norm()
    assert err_pca < 0.8 * err_random and err_pca < word.norm()


def test_bad_shapes_are_named(minilm):
    narrow = MobileBertForPreTraining(MobileBertConfig.mobilebert(num_hidden_layers=1, hidden_size=256))
    with pytest.raises(ValueError, match="student: projecting a 384-d teacher's embeddings needs hidden_size >= 384"):
        project_embeddings(narrow, minilm)
    with pytest.raises(ValueError, match="teacher: expected a BERT-family model"):
        project_embeddings(narrow, torch.nn.Linear(2, 2))


def test_trainer_option_projects_and_trains_them(bbc_corpus, vocab_dir, tmp_path, minilm):
    config = TrainConfig(corpus=[bbc_corpus], tokenizer=vocab_dir, output_dir=str(tmp_path), strategy="joint",
                         teacher=str(minilm_dir()), layer_steps=1, project_embeddings=True, batch_size=2,
                         max_seq_len=32, progress=False, optimizer="adamw")
    trainer = Trainer(config, student=MobileBertConfig.mobilebert(num_hidden_layers=2))
    ids, types = torch.randint(1000, 30000, (1, 8)), torch.zeros(1, 8, dtype=torch.long)
    mine, theirs = embedding_sums(trainer.student, minilm, ids, types)
    assert rel_err(mine, theirs) < 0.7                       # the teacher's, up to the rank-128 truncation
    assert not trainer.copied                                # a starting point, trained like other embeddings
    before = trainer.student.mobilebert.embeddings.word_embeddings.weight.detach().clone()
    trainer.step()
    assert not torch.equal(before, trainer.student.mobilebert.embeddings.word_embeddings.weight)
