"""Tasks: what is predicted, with which head, scored by which metrics, and the model that does it.

A `Task` is one of four kinds: `classification` (one sentence or a pair → one of `labels`),
`regression` (a pair → a score, STS-B), `token_classification` (a tag per word) and
`question_answering` (an extractive span, SQuAD). `GLUE` lists the nine GLUE tasks with their labels
and official metrics. `load_model` builds the task's head on a pretrained backbone: our MobileBERT
(a folder from `mbkernels distill`, or a Hugging Face MobileBERT folder — the same format) or any
other Hugging Face model through its Auto class (e.g. a BERT teacher, to compare with).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass

import torch

from mbkernels.config import MobileBertConfig
from mbkernels.heads import (
    MobileBertForQuestionAnswering,
    MobileBertForSequenceClassification,
    MobileBertForTokenClassification,
)

KINDS = ("classification", "regression", "token_classification", "question_answering")
HEADS = {"classification": MobileBertForSequenceClassification, "regression": MobileBertForSequenceClassification,
         "token_classification": MobileBertForTokenClassification,
         "question_answering": MobileBertForQuestionAnswering}
_AUTO = {"classification": "AutoModelForSequenceClassification", "regression": "AutoModelForSequenceClassification",
         "token_classification": "AutoModelForTokenClassification",
         "question_answering": "AutoModelForQuestionAnswering"}
DEFAULT_METRICS = {"classification": ("accuracy",), "regression": ("pearson", "spearman"),
                   "token_classification": ("accuracy",), "question_answering": ("exact_match", "f1")}


@dataclass(frozen=True)
class Task:
    name: str
    kind: str
    labels: tuple[str, ...] = ()      # classification and token tags: names in label-id order
    metrics: tuple[str, ...] = ()     # default: by kind; the first one selects the best checkpoint

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Task {self.name!r}: kind: expected one of {KINDS}, got {self.kind!r}")
        if self.kind in ("classification", "token_classification") and len(self.labels) < 2:
            raise ValueError(f"Task {self.name!r}: labels: expected at least two label names for {self.kind}, "
                             f"got {list(self.labels)}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"Task {self.name!r}: labels: expected distinct names, got {list(self.labels)}")
        if not self.metrics:
            object.__setattr__(self, "metrics", DEFAULT_METRICS[self.kind])

    @property
    def num_labels(self) -> int:
        return {"regression": 1, "question_answering": 2}.get(self.kind, len(self.labels))

    def label_id(self, label: str) -> int:
        try:
            return self.labels.index(str(label))
        except ValueError:
            raise ValueError(f"label: expected one of {list(self.labels)} for task {self.name!r}, "
                             f"got {label!r}") from None


GLUE = {
    "cola": Task("cola", "classification", ("0", "1"), ("matthews_corrcoef",)),
    "sst2": Task("sst2", "classification", ("0", "1"), ("accuracy",)),
    "mrpc": Task("mrpc", "classification", ("0", "1"), ("f1", "accuracy")),
    "stsb": Task("stsb", "regression", (), ("pearson", "spearman")),
    "qqp": Task("qqp", "classification", ("0", "1"), ("f1", "accuracy")),
    "mnli": Task("mnli", "classification", ("contradiction", "entailment", "neutral"), ("accuracy",)),
    "qnli": Task("qnli", "classification", ("entailment", "not_entailment"), ("accuracy",)),
    "rte": Task("rte", "classification", ("entailment", "not_entailment"), ("accuracy",)),
    "wnli": Task("wnli", "classification", ("0", "1"), ("accuracy",)),
}


def _model_type(folder: str) -> str | None:
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model: expected a folder with config.json and weights, got {folder!r}")
    with open(path) as f:
        return json.load(f).get("model_type")


def head_overrides(task: Task) -> dict:
    out = {"num_labels": task.num_labels}
    if task.kind == "regression":
        out["problem_type"] = "regression"
    elif task.kind == "classification":
        out["problem_type"] = "single_label_classification"
        out["id2label"] = dict(enumerate(task.labels))
    return out


def load_model(source: str | os.PathLike | MobileBertConfig, task: Task) -> torch.nn.Module:
    """The task's model: a MobileBERT config (random init), or a pretrained folder whose backbone is
    loaded and whose task head is new unless the folder already has one of the right shape."""
    head = HEADS[task.kind]
    overrides = head_overrides(task)
    if isinstance(source, MobileBertConfig):
        return head(dataclasses.replace(source, **overrides))
    folder = os.fspath(source)
    if _model_type(folder) == "mobilebert":
        with warnings.catch_warnings():  # a new head (missing keys) and unused pre-training heads are expected
            warnings.filterwarnings("ignore", message="loading MobileBert")
            return head.from_pretrained(folder, **overrides)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()  # "newly initialised head" is expected here
    auto = getattr(transformers, _AUTO[task.kind])
    if task.kind == "classification":
        overrides["label2id"] = {v: k for k, v in overrides["id2label"].items()}
    return auto.from_pretrained(folder, **overrides)
