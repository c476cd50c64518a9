"""Extractive question answering (SQuAD): the JSON loader, document windows, span decoding.

A context longer than the model's input is cut into overlapping windows of WordPiece tokens, each
`[CLS] question [SEP] window [SEP]`, the next window starting `doc_stride` tokens after the previous
one (BERT's `run_squad.py` meaning of doc stride). The fast tokenizer's character offsets map tokens
back to the context, so a predicted span is a slice of the original text. A token seen in several
windows is predicted from the window where it has the most context on both sides (BERT's
"max context" rule); decoding picks, over all of a question's windows, the highest start + end logit
with start <= end inside the context and at most `max_answer_len` tokens.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Answer:
    text: str
    start: int                          # character offset in the context


@dataclass
class SquadExample:
    qid: str
    question: str
    context: str
    answers: list[Answer] = field(default_factory=list)   # empty: unanswerable (v2.0) or unlabeled


@dataclass
class QAFeature:
    input_ids: list[int]
    token_type_ids: list[int]
    index: int                          # of the example
    offsets: list[tuple[int, int] | None]   # context character span per token; None outside the context
    max_context: list[bool]             # the token has its most context in this window
    start: int | None = None            # answer token positions (0: [CLS], no answer in this window)
    end: int | None = None

    @property
    def label(self):
        return None if self.start is None else (self.start, self.end)


def load_squad(path: str | os.PathLike) -> list[SquadExample]:
    """Questions from a SQuAD v1.1/v2.0 JSON file (`data[].paragraphs[].qas[]`)."""
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise ValueError(f"{path}: expected SQuAD JSON with a 'data' list, got {type(doc).__name__} "
                         f"with keys {sorted(doc) if isinstance(doc, dict) else '-'}")
    examples = []
    for article in doc["data"]:
        for para in article["paragraphs"]:
            context = para["context"]
            for q in para["qas"]:
                answers = [] if q.get("is_impossible") else [Answer(a["text"], int(a["answer_start"]))
                                                             for a in q.get("answers", [])]
                for a in answers:
                    if context[a.start:a.start + len(a.text)] != a.text:
                        raise ValueError(f"{path}: question {q['id']}: answer {a.text!r} is not at character "
                                         f"{a.start} of its context")
                examples.append(SquadExample(str(q["id"]), q["question"], context, answers))
    return examples


def windows(n_tokens: int, room: int, doc_stride: int) -> list[tuple[int, int]]:
    """(start, length) of each window over n_tokens context tokens."""
    if room <= 0:
        raise ValueError(f"max_seq_len: no room left for the context after the question (room {room})")
    if doc_stride <= 0:
        raise ValueError(f"doc_stride: expected a positive number of tokens, got {doc_stride}")
    spans, start = [], 0
    while True:
        length = min(room, n_tokens - start)
        spans.append((start, length))
        if start + length >= n_tokens:
            return spans
        start += min(length, doc_stride)


def _token_span(offsets: Sequence[tuple[int, int]], char_start: int, char_end: int) -> tuple[int, int]:
    """First and last context tokens overlapping the characters [char_start, char_end)."""
    first = next(i for i, (_, e) in enumerate(offsets) if e > char_start)
    last = max(i for i, (s, _) in enumerate(offsets) if s < char_end)
    return first, last


def encode_squad(examples: Sequence[SquadExample], tokenizer, max_seq_len: int = 384, doc_stride: int = 128,
                 max_query_len: int = 64, labels: bool = True) -> list[QAFeature]:
    """Windows of every example; with `labels`, the answer's token positions (first answer) or 0."""
    tokenizer.no_truncation()
    tokenizer.no_padding()
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    features = []
    for index, e in enumerate(examples):
        question = tokenizer.encode(e.question, add_special_tokens=False).ids[:max_query_len]
        ctx = tokenizer.encode(e.context, add_special_tokens=False)
        spans = windows(len(ctx.ids), max_seq_len - len(question) - 3, doc_stride)
        answer = None
        if labels and e.answers:
            a = e.answers[0]
            answer = _token_span(ctx.offsets, a.start, a.start + len(a.text))
        head = len(question) + 2
        for start, length in spans:
            window = range(start, start + length)
            best = [max(((min(p - s, s + n - 1 - p) + 0.01 * n), s) for s, n in spans if s <= p < s + n)[1] == start
                    for p in window]
            feature = QAFeature(
                [cls, *question, sep, *ctx.ids[start:start + length], sep],
                [0] * head + [1] * (length + 1), index,
                [None] * head + [tuple(ctx.offsets[p]) for p in window] + [None],
                [False] * head + best + [False])
            if labels:
                inside = answer is not None and start <= answer[0] and answer[1] < start + length
                feature.start, feature.end = (answer[0] - start + head, answer[1] - start + head) if inside else (0, 0)
            features.append(feature)
    return features


def collate(features: Sequence[QAFeature], pad_id: int = 0) -> dict[str, torch.Tensor]:
    length = max(len(f.input_ids) for f in features)
    ids = torch.full((len(features), length), pad_id, dtype=torch.long)
    types, mask = torch.zeros_like(ids), torch.zeros_like(ids)
    for i, f in enumerate(features):
        n = len(f.input_ids)
        ids[i, :n], types[i, :n], mask[i, :n] = torch.tensor(f.input_ids), torch.tensor(f.token_type_ids), 1
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    if all(f.start is not None for f in features):
        batch["start_positions"] = torch.tensor([f.start for f in features])
        batch["end_positions"] = torch.tensor([f.end for f in features])
    return batch


def decode(examples: Sequence[SquadExample], features: Sequence[QAFeature], start_logits: Sequence[np.ndarray],
           end_logits: Sequence[np.ndarray], max_answer_len: int = 30, n_best: int = 20) -> dict[str, str]:
    """The best answer text per question ("" when no window offers a valid span)."""
    if max_answer_len <= 0:
        raise ValueError(f"max_answer_len: expected a positive number of tokens, got {max_answer_len}")
    best: dict[int, tuple[float, str]] = {}
    for f, s_logits, e_logits in zip(features, start_logits, end_logits):
        context = examples[f.index].context
        starts = np.argsort(s_logits)[::-1][:n_best]
        ends = np.argsort(e_logits)[::-1][:n_best]
        for s in starts:
            if f.offsets[s] is None or not f.max_context[s]:
                continue
            for e in ends:
                if f.offsets[e] is None or e < s or e - s + 1 > max_answer_len:
                    continue
                value = float(s_logits[s] + e_logits[e])
                if f.index not in best or value > best[f.index][0]:
                    best[f.index] = (value, context[f.offsets[s][0]:f.offsets[e][1]])
    return {e.qid: best[i][1] if i in best else "" for i, e in enumerate(examples)}
