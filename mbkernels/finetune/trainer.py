"""Fine-tuning: AdamW with linear warm-up and decay, optional bf16 autocast, evaluation on a dev split
with early stopping, the best model kept, a progress bar and a metrics log.

The loop is model-agnostic: any module that takes `input_ids`, `attention_mask`, `token_type_ids` and
the task's targets and returns `.loss` (our MobileBERT heads, or a Hugging Face model to compare with).
Our models run on the fused ops of the chosen backend (`mbkernels.use_backend`).
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from mbkernels.backend import BACKENDS, use_backend
from mbkernels.distill.optim import _no_decay, adamw
from mbkernels.finetune.evaluate import evaluate
from mbkernels.finetune.data import batches, collate_for
from mbkernels.finetune.tasks import Task

PRECISIONS = ("fp32", "bf16")


@dataclass
class FinetuneConfig:
    output_dir: str | None = None       # metrics.jsonl and the best model (model/, HF format) when set
    epochs: float = 3.0
    max_steps: int = 0                  # when positive, the step budget (instead of epochs)
    batch_size: int = 32
    eval_batch_size: int = 64
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.1                 # fraction of all steps
    clip: float = 1.0                   # global gradient norm; 0: off
    eval_every: int = 0                 # steps between dev evaluations; 0: once per epoch
    patience: int = 0                   # dev evaluations without improvement before stopping; 0: never
    precision: str = "fp32"             # or "bf16" autocast
    backend: str = "fused"
    device: str | None = None           # default: cuda if available
    seed: int = 0
    progress: bool = True
    extra: dict = field(default_factory=dict)  # task-specific evaluation options (QA: max_answer_len, n_best)

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"{name}: expected {expected}, got {getattr(self, name)!r}")

        need(self.epochs > 0 or self.max_steps > 0, "epochs", "a positive number of epochs (or max_steps > 0)")
        need(self.max_steps >= 0, "max_steps", "a non-negative step count")
        need(self.batch_size > 0, "batch_size", "a positive int")
        need(self.eval_batch_size > 0, "eval_batch_size", "a positive int")
        need(self.lr > 0, "lr", "a positive learning rate")
        need(0.0 <= self.warmup <= 1.0, "warmup", "a fraction in [0, 1]")
        need(self.clip >= 0, "clip", "a non-negative gradient norm (0: no clipping)")
        need(self.eval_every >= 0 and self.patience >= 0, "eval_every", "non-negative (eval_every, patience)")
        need(self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}")
        need(self.backend in BACKENDS, "backend", f"one of {BACKENDS}")


@dataclass
class FinetuneResult:
    steps: int
    seconds: float
    best: dict | None                   # dev metrics of the kept model (None without a dev split)
    best_step: int | None
    history: list[dict]                 # per step: loss, lr; per evaluation: the dev metrics


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _device(name: str | None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def learning_rate(step: int, total: int, base: float, warmup: float) -> float:
    """Linear warm-up over the first `warmup` share of steps, then linear decay to 0."""
    warm = max(1, round(warmup * total)) if warmup > 0 else 0
    if step < warm:
        return base * (step + 1) / warm
    return base * max(0.0, (total - step) / max(1, total - warm))


def finetune(model: torch.nn.Module, task: Task, train: Sequence, config: FinetuneConfig,
             dev: tuple[Sequence, Sequence] | None = None) -> FinetuneResult:
    """Train `model` on the `train` features; with `dev` = (examples, features), evaluate as configured,
    keep the best model by the task's first metric and stop after `patience` evaluations without gain."""
    c = config
    if not train:
        raise ValueError("train: expected at least one training feature, got none")
    set_seed(c.seed)
    device = _device(c.device)
    model.to(device).train()
    per_epoch = math.ceil(len(train) / c.batch_size)
    total = c.max_steps if c.max_steps > 0 else math.ceil(c.epochs * per_epoch)
    eval_every = c.eval_every or per_epoch
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if not _no_decay(n, p)], "weight_decay": c.weight_decay},
              {"params": [p for n, p in named if _no_decay(n, p)], "weight_decay": 0.0}]
    optimizer = adamw(groups, lr=c.lr)  # torch's fused AdamW where the parameters allow it
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=c.precision == "bf16")
    metric = task.metrics[0]
    history: list[dict] = []
    best, best_step, best_state, stale = None, None, None, 0
    log = None
    if c.output_dir:
        os.makedirs(c.output_dir, exist_ok=True)
        log = open(os.path.join(c.output_dir, "metrics.jsonl"), "w")
    bar = None
    if c.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="step", dynamic_ncols=True, desc=task.name)
    start = time.perf_counter()
    step, epoch = 0, 0
    try:
        with use_backend(c.backend):
            while step < total:
                for _, batch in batches(train, c.batch_size, shuffle=True, seed=c.seed + epoch,
                                        collate_fn=collate_for(task)):
                    lr = learning_rate(step, total, c.lr, c.warmup)
                    for g in optimizer.param_groups:
                        g["lr"] = lr
                    batch = {k: v.to(device) for k, v in batch.items()}
                    with autocast:
                        loss = model(**batch).loss
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"step {step + 1}: the loss is {loss.item()}; "
                                                 "the parameters were not updated")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if c.clip > 0:
                        torch.nn.utils.clip_grad_norm_([p for _, p in named], c.clip)
                    optimizer.step()
                    step += 1
                    record = {"step": step, "epoch": epoch, "loss": loss.item(), "lr": lr}
                    if bar is not None:
                        bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
                        bar.update(1)
                    if dev is not None and (step % eval_every == 0 or step == total):
                        scores = evaluate(model, task, dev[0], dev[1], c.eval_batch_size,
                                                     backend=c.backend, precision=c.precision, **c.extra)
                        model.train()
                        record["dev"] = scores
                        if best is None or scores[metric] > best[metric]:
                            best, best_step, stale = scores, step, 0
                            best_state = copy.deepcopy({k: v.detach().clone() for k, v in model.state_dict().items()})
                        else:
                            stale += 1
                    history.append(record)
                    if log is not None:
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                    if step >= total or (c.patience and stale >= c.patience):
                        break
                epoch += 1
                if c.patience and stale >= c.patience:
                    break
    finally:
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
    seconds = time.perf_counter() - start
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if c.output_dir:
        model.save_pretrained(os.path.join(c.output_dir, "model"))
        with open(os.path.join(c.output_dir, "finetune.json"), "w") as f:
            json.dump({"config": asdict(c), "task": asdict(task), "steps": step, "seconds": seconds,
                       "best": best, "best_step": best_step}, f, indent=2)
    return FinetuneResult(step, seconds, best, best_step, history)

