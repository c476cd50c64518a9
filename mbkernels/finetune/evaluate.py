"""Evaluation: run a fine-tuned model over features, turn its outputs into predictions, score them
with the task's metrics, and (optionally) write `predictions.jsonl` and `metrics.json`.

Classification predicts the argmax label, regression the score, token classification a tag per word
(read at each word's first sub-word), question answering the best span (`qa.decode`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import torch

from mbkernels.backend import use_backend
from mbkernels.finetune import metrics, qa
from mbkernels.finetune.data import IGNORE_INDEX, batches, collate, collate_for
from mbkernels.finetune.tasks import Task


@torch.no_grad()
def predict(model: torch.nn.Module, features: Sequence, batch_size: int = 64, backend: str = "fused",
            precision: str = "fp32", collate_fn=collate) -> dict[str, list[np.ndarray]]:
    """Per feature, the model's outputs (`logits`, or `start_logits` and `end_logits`) without padding."""
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, list[np.ndarray]] = {}
    with use_backend(backend), torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        for _, batch in batches(features, batch_size, collate_fn=collate_fn):
            lengths = batch["attention_mask"].sum(1).tolist()
            inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")}
            result = model(**inputs)
            for name in ("logits", "start_logits", "end_logits"):
                value = getattr(result, name, None)
                if value is None:
                    continue
                value = value.float().cpu().numpy()
                per_token = name != "logits" or value.ndim == 3  # [B, S(, C)]: cut the padding off
                out.setdefault(name, []).extend(v[:n] if per_token else v for v, n in zip(value, lengths))
    return out


def predictions_of(task: Task, examples: Sequence, features: Sequence, outputs: dict, **qa_options) -> list:
    """One prediction per example: a label id, a score, tag ids per word, or an answer string."""
    if task.kind == "question_answering":
        answers = qa.decode(examples, features, outputs["start_logits"], outputs["end_logits"], **qa_options)
        return [answers[e.qid] for e in examples]
    logits = outputs["logits"]
    if task.kind == "regression":
        return [float(v.reshape(-1)[0]) for v in logits]
    if task.kind == "classification":
        return [int(np.argmax(v)) for v in logits]
    preds: list = [None] * len(examples)
    for f, v in zip(features, logits):  # one feature per example; tags at first sub-words
        words = [int(t) for t, first in zip(np.argmax(v, -1), _first_subwords(f)) if first]
        preds[f.index] = words
    return preds


def _first_subwords(feature) -> list[bool]:
    if feature.label is None:
        raise ValueError("features: token-classification predictions need the features' word alignment (labels)")
    return [t != IGNORE_INDEX for t in feature.label]


def score(task: Task, examples: Sequence, predictions: Sequence) -> dict[str, float]:
    if task.kind == "question_answering":
        return metrics.squad({e.qid: p for e, p in zip(examples, predictions)},
                             {e.qid: [a.text for a in e.answers] or [""] for e in examples})
    if task.kind == "token_classification":  # word-level, over the words kept after truncation
        pairs = [(p, y) for e, pred in zip(examples, predictions) for p, y in zip(pred, e.label)]
        return metrics.compute(task.metrics, [p for p, _ in pairs], [y for _, y in pairs])
    return metrics.compute(task.metrics, predictions, [e.label for e in examples])


def evaluate(model: torch.nn.Module, task: Task, examples: Sequence, features: Sequence, batch_size: int = 64,
             backend: str = "fused", precision: str = "fp32", output_dir: str | None = None,
             **qa_options) -> dict[str, float]:
    """Metrics of `model` on labeled examples; with `output_dir`, also predictions.jsonl and metrics.json."""
    outputs = predict(model, features, batch_size, backend, precision, collate_for(task))
    preds = predictions_of(task, examples, features, outputs, **qa_options)
    labeled = all(_label_of(e) is not None for e in examples)
    result = score(task, examples, preds) if labeled else {}
    if output_dir:
        write(output_dir, task, examples, preds, result)
    return result


def _label_of(example):
    return example.answers if hasattr(example, "answers") else example.label


def write(output_dir: str, task: Task, examples: Sequence, predictions: Sequence, result: dict) -> None:
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "predictions.jsonl"), "w") as f:
        for e, p in zip(examples, predictions):
            row = {"id": getattr(e, "qid", None) or e.guid, "prediction": p}
            if task.kind == "classification":
                row["label"] = task.labels[p]
            elif task.kind == "token_classification":
                row["tags"] = [task.labels[t] for t in p]
            f.write(json.dumps(row) + "\n")
    with open(os.path.join(output_dir, "metrics.json"), "w") as f:
        json.dump({"task": task.name, "examples": len(examples), **result}, f, indent=2)
