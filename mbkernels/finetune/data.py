"""Labeled data → features → padded batches: GLUE TSV files, CSV and JSONL, WordPiece encoding.

Loaders return `Example`s (a text or a text pair with its label, or words with their tags); `encode`
turns them into `Feature`s with the `tokenizers` library (truncating the longer segment first, as
BERT's GLUE code does); `batches` pads each batch to its longest member. SQuAD data lives in `qa.py`.

GLUE layout (the files the GLUE distribution unpacks, read with tabs and no quoting): every task's
files have a header naming its columns, except CoLA's train.tsv and dev.tsv, whose columns are
(source, label, original label, sentence). MNLI's dev and test splits are `dev_matched`,
`dev_mismatched`, `test_matched`, `test_mismatched`. Test files carry no labels.
"""

from __future__ import annotations

import csv
import json
import os
import random
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from mbkernels.finetune import qa
from mbkernels.finetune.tasks import GLUE, Task

IGNORE_INDEX = -100  # tags of sub-word continuations and special tokens (cross-entropy's ignore_index)


@dataclass
class Example:
    text: str | list[str]               # a sentence, or the words of a token-classification example
    text_pair: str | None = None
    label: int | float | list[int] | None = None   # label id, score, or tag ids per word; None: unlabeled
    guid: str = ""


@dataclass
class Feature:
    input_ids: list[int]
    token_type_ids: list[int]
    label: int | float | list[int] | None
    index: int                          # of the example it encodes


# (text column, pair column, label column) by header name; CoLA's train/dev by position.
_GLUE_COLUMNS = {
    "cola": ("sentence", None, "label"), "sst2": ("sentence", None, "label"),
    "mrpc": ("#1 String", "#2 String", "Quality"), "stsb": ("sentence1", "sentence2", "score"),
    "qqp": ("question1", "question2", "is_duplicate"), "mnli": ("sentence1", "sentence2", "gold_label"),
    "qnli": ("question", "sentence", "label"), "rte": ("sentence1", "sentence2", "label"),
    "wnli": ("sentence1", "sentence2", "label"),
}
GLUE_FOLDERS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP", "mnli": "MNLI",
                 "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}


def glue_splits(task: str) -> tuple[str, ...]:
    if task == "mnli":
        return ("train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched")
    return ("train", "dev", "test")


def _label(task: Task, value: str, where: str):
    if task.kind == "regression":
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{where}: expected a numeric score, got {value!r}") from None
    try:
        return task.label_id(value)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def load_glue(folder: str | os.PathLike, task: str, split: str) -> list[Example]:
    """One split of a GLUE task from `folder` (the task's folder, e.g. glue_data/SST-2, or the
    glue_data folder holding it)."""
    if task not in GLUE:
        raise ValueError(f"task: expected a GLUE task {sorted(GLUE)}, got {task!r}")
    if split not in glue_splits(task):
        raise ValueError(f"split: expected one of {glue_splits(task)} for {task}, got {split!r}")
    folder = os.fspath(folder)
    if os.path.isdir(os.path.join(folder, GLUE_FOLDERS[task])):
        folder = os.path.join(folder, GLUE_FOLDERS[task])
    path = os.path.join(folder, f"{split}.tsv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"folder: expected {split}.tsv of {task} ({GLUE_FOLDERS[task]}) in {folder!r}")
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    t = GLUE[task]
    a, b, y = _GLUE_COLUMNS[task]
    if task == "cola" and not split.startswith("test"):
        header, columns = None, {"sentence": 3, "label": 1}
    else:
        header, rows = rows[0], rows[1:]
        columns = {name: i for i, name in enumerate(header)}
        missing = [c for c in (a, b) if c is not None and c not in columns]
        if missing:
            raise ValueError(f"{path}: expected columns {missing} in the header, got {header}")
    labeled = y in columns
    width = len(header) if header else 4
    examples, skipped = [], 0
    for line, row in enumerate(rows, start=2 if header else 1):
        if len(row) != width:  # QQP's train.tsv has a few broken lines; GLUE's own loaders skip them too
            skipped += 1
            continue
        where = f"{path}:{line}"
        label = _label(t, row[columns[y]], where) if labeled else None
        examples.append(Example(row[columns[a]], row[columns[b]] if b else None, label, f"{split}-{line}"))
    if skipped > len(rows) // 100 + 1:
        raise ValueError(f"{path}: {skipped} of {len(rows)} lines do not have the {width} columns of its header")
    return examples


def load_table(path: str | os.PathLike, task: Task, text: str = "text", text_pair: str | None = None,
               label: str | None = "label") -> list[Example]:
    """Examples from a CSV (header row) or JSONL (one object per line) file, by column names; token
    classification reads lists of words and tags (tag names) from the `text` and `label` columns."""
    path = os.fspath(path)
    if path.endswith((".jsonl", ".json")):
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    elif path.endswith((".csv", ".tsv")):
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t" if path.endswith(".tsv") else ","))
    else:
        raise ValueError(f"path: expected a .csv, .tsv or .jsonl file, got {path!r}")
    examples = []
    for i, row in enumerate(rows):
        where = f"{path} row {i + 1}"
        missing = [c for c in (text, text_pair) if c is not None and c not in row]
        if missing:
            raise ValueError(f"{where}: expected the columns {missing}, got {sorted(row)}")
        value = row.get(label) if label is not None else None
        if value is not None and task.kind == "token_classification":
            value = [_label(task, v, where) for v in value]
            if len(value) != len(row[text]):
                raise ValueError(f"{where}: expected one tag per word ({len(row[text])}), got {len(value)}")
        elif value is not None:
            value = _label(task, value, where)
        examples.append(Example(row[text], row[text_pair] if text_pair else None, value, str(i)))
    return examples


# -- encoding ----------------------------------------------------------------------------------------

def encode(examples: Sequence[Example], tokenizer, task: Task, max_seq_len: int) -> list[Feature]:
    """WordPiece features, truncated to max_seq_len (longest segment first). Token classification
    tags a word's first sub-word and ignores the rest."""
    if task.kind == "question_answering":
        raise ValueError("task: question answering has its own features (mbkernels.finetune.qa.encode_squad)")
    tokenizer.enable_truncation(max_seq_len, strategy="longest_first")
    tokenizer.no_padding()
    features = []
    if task.kind == "token_classification":
        encodings = tokenizer.encode_batch([e.text for e in examples], is_pretokenized=True)
        for i, (e, enc) in enumerate(zip(examples, encodings)):
            tags, previous = None, None
            if e.label is not None:
                tags = []
                for w in enc.word_ids:
                    tags.append(IGNORE_INDEX if w is None or w == previous else e.label[w])
                    previous = w
            features.append(Feature(enc.ids, enc.type_ids, tags, i))
        return features
    pairs = [(e.text, e.text_pair) if e.text_pair is not None else e.text for e in examples]
    for i, (e, enc) in enumerate(zip(examples, tokenizer.encode_batch(pairs))):
        features.append(Feature(enc.ids, enc.type_ids, e.label, i))
    return features


def collate(features: Sequence[Feature], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded tensors; `labels` when every feature has one (float for scores)."""
    length = max(len(f.input_ids) for f in features)
    ids = torch.full((len(features), length), pad_id, dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for i, f in enumerate(features):
        n = len(f.input_ids)
        ids[i, :n] = torch.tensor(f.input_ids)
        types[i, :n] = torch.tensor(f.token_type_ids)
        mask[i, :n] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    labels = [f.label for f in features]
    if all(y is not None for y in labels):
        if isinstance(labels[0], list):
            tags = torch.full_like(ids, IGNORE_INDEX)
            for i, y in enumerate(labels):
                tags[i, : len(y)] = torch.tensor(y)
            batch["labels"] = tags
        else:
            batch["labels"] = torch.tensor(labels, dtype=torch.float if isinstance(labels[0], float) else torch.long)
    return batch


def collate_for(task: Task):
    """The batch builder of a task's features (QA features carry answer positions, not labels)."""
    return qa.collate if task.kind == "question_answering" else collate


def batches(features: Sequence, batch_size: int, shuffle: bool = False, seed: int = 0,
            collate_fn=collate) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """(feature indices, batch) pairs. Shuffled batches group features of similar length (sort
    within pools of 50 batches, then shuffle the batches) so little compute goes to padding."""
    order = list(range(len(features)))
    if shuffle:
        rng = random.Random(seed)
        rng.shuffle(order)
        pool = 50 * batch_size
        order = [i for k in range(0, len(order), pool)
                 for i in sorted(order[k:k + pool], key=lambda i: len(features[i].input_ids))]
        chunks = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
        rng.shuffle(chunks)
    else:
        chunks = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
    for chunk in chunks:
        yield chunk, collate_fn([features[i] for i in chunk])
