"""Metrics with GLUE's and SQuAD's definitions, in numpy.

GLUE (as its official scorer and Hugging Face's `glue_compute_metrics` define them): accuracy; F1 of
the positive class (label 1: MRPC, QQP); Matthews correlation (CoLA); Pearson and Spearman
correlation (STS-B), Spearman being Pearson on ranks with tied values given their average rank.
SQuAD v1.1: exact match and token F1 after its answer normalisation (lower case, no punctuation, no
articles a/an/the, single spaces), each the maximum over the gold answers.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

import numpy as np


def _pair(predictions, references) -> tuple[np.ndarray, np.ndarray]:
    p, r = np.asarray(predictions), np.asarray(references)
    if p.shape != r.shape or p.ndim != 1 or p.size == 0:
        raise ValueError(f"predictions: expected a non-empty 1-d array shaped like references {r.shape}, got {p.shape}")
    return p, r


def accuracy(predictions, references) -> float:
    p, r = _pair(predictions, references)
    return float((p == r).mean())


def f1(predictions, references, positive=1) -> float:
    """F1 of the positive class; 0 when it is never predicted nor present."""
    p, r = _pair(predictions, references)
    tp = float(np.sum((p == positive) & (r == positive)))
    fp = float(np.sum((p == positive) & (r != positive)))
    fn = float(np.sum((p != positive) & (r == positive)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def matthews_corrcoef(predictions, references) -> float:
    """Matthews correlation, multiclass form (Gorodkin's R_K; the binary MCC for two classes);
    0 when a marginal is constant (sklearn's convention)."""
    p, r = _pair(predictions, references)
    classes = np.unique(np.concatenate([p, r]))
    index = {c: i for i, c in enumerate(classes.tolist())}
    cm = np.zeros((len(classes), len(classes)))
    np.add.at(cm, ([index[x] for x in r.tolist()], [index[x] for x in p.tolist()]), 1)
    t, q = cm.sum(1), cm.sum(0)  # true and predicted counts per class
    n, c = cm.sum(), np.trace(cm)
    denom = np.sqrt((n * n - q @ q) * (n * n - t @ t))
    return 0.0 if denom == 0 else float((c * n - t @ q) / denom)


def pearson(predictions, references) -> float:
    p, r = (a.astype(np.float64) for a in _pair(predictions, references))
    p, r = p - p.mean(), r - r.mean()
    denom = np.sqrt((p @ p) * (r @ r))
    if denom == 0:
        raise ValueError("predictions: Pearson correlation is undefined for a constant array")
    return float(p @ r / denom)


def rank(values) -> np.ndarray:
    """1-based ranks; tied values share the average of the ranks they span."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    sorted_v = v[order]
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], v.size]
    ranks = np.empty(v.size)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # mean of ranks start+1..end
    return ranks


def spearman(predictions, references) -> float:
    p, r = _pair(predictions, references)
    return pearson(rank(p), rank(r))


# -- SQuAD -------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_exact_match(prediction: str, answers: Sequence[str]) -> float:
    p = normalize_answer(prediction)
    return float(max(p == normalize_answer(a) for a in answers))


def squad_f1(prediction: str, answers: Sequence[str]) -> float:
    def one(gold: str) -> float:
        p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
        common = sum((collections.Counter(p) & collections.Counter(g)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(p), common / len(g)
        return 2 * precision * recall / (precision + recall)

    return max(one(a) for a in answers)


def squad(predictions: dict[str, str], answers: dict[str, Sequence[str]]) -> dict[str, float]:
    """SQuAD v1.1 `exact_match` and `f1` in percent over the questions in `answers`."""
    missing = set(answers) - set(predictions)
    if missing:
        raise ValueError(f"predictions: expected one answer per question, {len(missing)} missing "
                         f"(e.g. {sorted(missing)[:3]})")
    if not answers:
        raise ValueError("answers: expected at least one question, got none")
    em = [squad_exact_match(predictions[q], a) for q, a in answers.items()]
    f = [squad_f1(predictions[q], a) for q, a in answers.items()]
    return {"exact_match": 100.0 * float(np.mean(em)), "f1": 100.0 * float(np.mean(f))}


METRICS = {"accuracy": accuracy, "f1": f1, "matthews_corrcoef": matthews_corrcoef, "pearson": pearson,
           "spearman": spearman}


def compute(names: Sequence[str], predictions, references) -> dict[str, float]:
    """The named metrics of one prediction set (classification/regression)."""
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"metrics: expected names from {sorted(METRICS)}, got {unknown}")
    return {n: METRICS[n](predictions, references) for n in names}
