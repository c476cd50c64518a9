"""The trainer: a loop over the phases of a strategy, each step one global batch.

`Distiller` is the trained module (student + projections) and turns a batch, the phase and the
teacher's outputs into loss components (plain means, `losses.py`). `Trainer` owns everything around it:
data, teacher, optimizer per phase, learning rates, gradient accumulation and reduction across ranks,
clipping, checkpoints, the metrics log and the progress bar. A step's loss is the weighted sum of the
components, each micro-batch's share weighted by its count (positions, masked tokens, examples) over the
global batch's, so that 1 process × batch B, k micro-batches of B/k and n ranks × B/n train alike. (With
padding counted in the layer losses, Google's default, the counted positions depend on each micro-batch's
padded length: splits agree exactly when shapes are fixed, `pad_to_multiple_of = max_seq_len`.)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from mbkernels.backend import BACKENDS, use_backend
from mbkernels.config import MobileBertConfig
from mbkernels.distill import checkpoint, distributed, forward, losses, strategies
from mbkernels.distill.data import PretrainingStream, collate, corpus_files, load_tokenizer, vocab_of
from mbkernels.distill.embeddings import project_embeddings
from mbkernels.distill.losses import IGNORE_INDEX
from mbkernels.distill.optim import OPTIMIZERS, build_optimizer, group_of, param_groups, set_learning_rates
from mbkernels.distill.teacher import (
    MobileBertTeacher,
    TeacherOutput,
    check_layer_map,
    load_teacher,
    parse_layer_map,
    reduce_heads,
    uniform_layer_map,
)
from mbkernels.heads import MobileBertForPreTraining

PRESETS = {"mobilebert": MobileBertConfig.mobilebert, "mobilebert_tiny": MobileBertConfig.mobilebert_tiny,
           "mobilebert_no_opt": MobileBertConfig.mobilebert_no_opt, "ib_bert_large": MobileBertConfig.ib_bert_large}
# Google's factors (REFERENCE "Distillation recipe"); a weight of 0 turns a component off.
WEIGHTS = {"feature_map": 100.0, "attention": 1.0, "mean": 5000.0, "variance": 5.0, "mlm": 1.0, "nsp": 1.0}
# What each component averages over, to weight micro-batches into the global batch's mean.
COUNT_OF = {"feature_map": "positions", "attention": "positions", "mean": "positions", "variance": "positions",
            "mlm": "masked", "nsp": "examples"}
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    corpus: list[str]                    # files or folders: one sentence per line, blank line between documents
    tokenizer: str                       # folder with vocab.txt (or the file)
    output_dir: str
    strategy: str = "progressive"        # pretrain | auxiliary | joint | progressive
    student: str = "mobilebert"          # a preset, a config.json, or a folder (config.json [+ weights])
    student_overrides: dict = field(default_factory=dict)
    teacher: str | None = None           # folder: one of ours (model_type mobilebert) or any HF BERT-family
    steps: int = 0                       # pretrain, auxiliary: all steps; joint, progressive: stage-2 steps
    layer_steps: int = 0                 # progressive: steps per layer; joint: the layer-wise stage
    layer_map: str | None = None         # "student:teacher,…" 1-based; default uniform (teacher.uniform_layer_map)
    head_map: list[int] | None = None    # teacher head per student head; default one to one or group averages
    copy_from_teacher: bool = True       # embeddings and heads, where names and shapes allow
    project_embeddings: bool = False     # HF teacher: student embeddings from its through a PCA (embeddings.py)
    during: float = 3.0                  # progressive lr multipliers (Google's code)
    after: float = 0.3
    freeze_finished: bool = False
    weights: dict = field(default_factory=dict)  # overrides of WEIGHTS
    alpha: float = 0.5                   # share of the teacher's soft targets in the MLM target
    temperature: float = 1.0
    count_padding: bool = True           # average layer losses over padding too (Google's code)
    optimizer: str = "lamb"
    lr: float = 1.5e-3
    weight_decay: float = 0.01
    warmup: float = 0.1                  # fraction of each phase
    decay: str = "linear"                # of the phases with MLM; layer-wise phases stay constant after warm-up
    clip: float = 1.0                    # global gradient norm; 0 turns clipping off
    batch_size: int = 32                 # global: all ranks and micro-batches of one optimizer step
    grad_accum: int = 1
    max_seq_len: int = 128
    pad_to_multiple_of: int = 8
    mask_prob: float = 0.15
    nsp_prob: float = 0.5
    dropout: bool | None = None          # None: on when pre-training, off when distilling (Google's code)
    precision: str = "fp32"              # or "bf16" autocast
    backend: str = "fused"
    device: str | None = None            # default: cuda if available
    seed: int = 0
    save_every: int = 0                  # checkpoint every N steps (and always when fit() returns)
    keep_checkpoints: int = 2
    resume: str = "auto"                 # "auto": the newest checkpoint in output_dir if any; "never"; or a file
    log_every: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"{name}: expected {expected}, got {getattr(self, name)!r}")

        if isinstance(self.corpus, (str, os.PathLike)):
            self.corpus = [os.fspath(self.corpus)]
        need(self.strategy in strategies.STRATEGIES, "strategy", f"one of {strategies.STRATEGIES}")
        if self.strategy in ("pretrain", "auxiliary"):
            need(self.steps > 0, "steps", f"a positive number of steps for the {self.strategy} strategy")
        else:
            need(self.layer_steps > 0, "layer_steps", f"a positive number of steps for the {self.strategy} strategy")
            need(self.steps >= 0, "steps", "0 (no stage 2) or a positive number of stage-2 steps")
        need(self.optimizer in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}")
        need(self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}")
        need(self.backend in BACKENDS, "backend", f"one of {BACKENDS}")
        need(self.decay in strategies.DECAYS, "decay", f"one of {strategies.DECAYS}")
        need(set(self.weights) <= set(WEIGHTS) and all(v >= 0 for v in self.weights.values()), "weights",
             f"non-negative weights for {sorted(WEIGHTS)}")
        need(self.lr > 0, "lr", "a positive learning rate")
        need(self.batch_size > 0 and self.grad_accum > 0 and self.batch_size % self.grad_accum == 0, "batch_size",
             f"a positive multiple of grad_accum={self.grad_accum}")
        need(0.0 <= self.alpha <= 1.0, "alpha", "a weight in [0, 1]")
        need(self.temperature > 0, "temperature", "a positive float")
        need(self.clip >= 0, "clip", "a non-negative gradient norm (0: no clipping)")
        need(0.0 <= self.warmup <= 1.0, "warmup", "a fraction of each phase in [0, 1]")
        need(self.during >= 0 and self.after >= 0, "during", "non-negative multipliers (during, after)")
        need(self.pad_to_multiple_of > 0, "pad_to_multiple_of", "a positive int")
        need(0 < self.mask_prob < 1, "mask_prob", "a probability in (0, 1)")
        need(self.resume in ("auto", "never") or os.path.isfile(self.resume), "resume",
             "'auto', 'never' or an existing checkpoint file")

    def loss_weights(self) -> dict[str, float]:
        return {**WEIGHTS, **self.weights}


def build_student(spec: str | MobileBertConfig | MobileBertForPreTraining, overrides: dict) -> MobileBertForPreTraining:
    """A student from a preset name, a config.json, a folder (its weights loaded when present), a config
    or a model, with `overrides` applied to the config."""
    if isinstance(spec, MobileBertForPreTraining):
        if overrides:
            raise ValueError("student_overrides: cannot change the config of a model object; pass a config instead")
        return spec
    if isinstance(spec, MobileBertConfig):
        config = dataclasses.replace(spec, **overrides)
    elif spec in PRESETS:
        config = PRESETS[spec](**overrides)
    elif os.path.isdir(spec):
        if any(os.path.isfile(os.path.join(spec, n)) for n in ("model.safetensors", "pytorch_model.bin")):
            return MobileBertForPreTraining.from_pretrained(spec, **overrides).train()
        config = dataclasses.replace(MobileBertConfig.load(spec), **overrides)
    elif os.path.isfile(spec):
        with open(spec) as f:
            config = dataclasses.replace(MobileBertConfig.from_dict(json.load(f)), **overrides)
    else:
        raise ValueError(f"student: expected a preset {sorted(PRESETS)}, a config.json or a folder, got {spec!r}")
    return MobileBertForPreTraining(config)


def copy_from_teacher(student: MobileBertForPreTraining, teacher: MobileBertForPreTraining) -> list[str]:
    """Copy embedding and head parameters whose names and shapes match (Google initialises the student
    from the teacher's checkpoint); a norm's parameters only when both use the same kind of norm."""
    theirs = dict(teacher.named_parameters())
    same_norm = student.config.normalization_type == teacher.config.normalization_type
    copied = []
    with torch.no_grad():
        for name, p in student.named_parameters():
            if not name.startswith(("mobilebert.embeddings.", "mobilebert.pooler.", "cls.")):
                continue
            if name.startswith("mobilebert.embeddings.LayerNorm.") and not same_norm:
                continue
            t = theirs.get(name)
            if t is not None and t.shape == p.shape:
                p.copy_(t)
                copied.append(name)
    return copied


class Distiller(nn.Module):
    """Student + projections → loss components for one micro-batch (each a mean over its own count)."""

    def __init__(self, student: MobileBertForPreTraining, projections: nn.ModuleDict, layer_map: dict[int, int],
                 head_map: list[int] | None, weights: dict[str, float], alpha: float, temperature: float,
                 count_padding: bool):
        super().__init__()
        self.student = student
        self.projections = projections
        self.layer_map = layer_map
        self.head_map = head_map
        self.weights = weights
        self.alpha = alpha
        self.temperature = temperature
        self.count_padding = count_padding

    def teacher_depth(self, phase: strategies.Phase) -> int | None:
        """How many teacher layers this phase needs (None: all, for its MLM head)."""
        if phase.mlm == "distill" or not phase.layers:
            return None
        return max(self.layer_map[j] for j in phase.layers)

    def forward(self, batch: dict[str, torch.Tensor], phase: strategies.Phase,
                teacher: TeacherOutput | None) -> dict[str, torch.Tensor]:
        s, w = self.student, self.weights
        mask = batch["attention_mask"]
        upto = None if phase.mlm or phase.nsp else max(phase.layers)
        want_scores = bool(phase.layers) and w["attention"] > 0
        hidden, scores = forward.encode(s, batch["input_ids"], mask, batch["token_type_ids"], upto, want_scores)
        positions = None if self.count_padding else mask.bool()
        out: dict[str, torch.Tensor] = {}
        for j in phase.layers:
            t = self.layer_map[j]
            h = hidden[j]
            if str(j) in self.projections:
                h = self.projections[str(j)](h)
            if w["feature_map"] > 0:
                out[f"feature_map/{j}"] = losses.feature_map_loss(h, teacher.hidden_states[t], positions)
            if want_scores:
                t_att = reduce_heads(teacher.attention[t - 1], scores[j - 1].shape[1], self.head_map)
                out[f"attention/{j}"] = losses.attention_loss(scores[j - 1], t_att, positions)
            if w["mean"] > 0 or w["variance"] > 0:
                out[f"mean/{j}"], out[f"variance/{j}"] = losses.mean_variance_loss(h, teacher.hidden_states[t], positions)
        if phase.mlm:
            labels = batch["labels"]
            predicted = labels != IGNORE_INDEX
            logits = forward.mlm_logits(s, hidden[-1], predicted)
            distill = phase.mlm == "distill"
            out["mlm"] = losses.mlm_distillation_loss(logits, teacher.mlm_logits if distill else None,
                                                      labels[predicted], self.alpha if distill else 0.0,
                                                      self.temperature)
        if phase.nsp:
            out["nsp"] = losses.nsp_loss(forward.nsp_logits(s, hidden[-1]), batch["next_sentence_label"])
        return out


class Trainer:
    """Builds the run from a TrainConfig (student and teacher may be given as objects) and trains it."""

    def __init__(self, config: TrainConfig, student: MobileBertForPreTraining | MobileBertConfig | None = None,
                 teacher=None):
        c = self.config = config
        self.rank, self.world, self.device = distributed.init(c.device)
        if c.batch_size % (self.world * c.grad_accum):
            raise ValueError(f"batch_size: expected a multiple of world size × grad_accum = "
                             f"{self.world} × {c.grad_accum}, got {c.batch_size}")
        self.micro_batch = c.batch_size // (self.world * c.grad_accum)
        tokenizer = load_tokenizer(c.tokenizer)
        self.vocab = vocab_of(tokenizer)
        self.stream = PretrainingStream(corpus_files(c.corpus), tokenizer, c.max_seq_len, c.seed, c.nsp_prob)

        torch.manual_seed(c.seed)
        self.student = build_student(student if student is not None else c.student, c.student_overrides)
        sc = self.student.config
        if self.vocab.size > sc.vocab_size:
            raise ValueError(f"tokenizer: its vocabulary has {self.vocab.size} tokens, more than the student's "
                             f"vocab_size={sc.vocab_size}")
        if c.max_seq_len > sc.max_position_embeddings:
            raise ValueError(f"max_seq_len: expected at most the student's max_position_embeddings="
                             f"{sc.max_position_embeddings}, got {c.max_seq_len}")
        self.teacher = None
        layer_map: dict[int, int] = {}
        if c.strategy != "pretrain":
            teacher = teacher if teacher is not None else c.teacher
            if teacher is None:
                raise ValueError(f"teacher: the {c.strategy} strategy distils from a teacher, got none "
                                 "(only the 'pretrain' strategy runs without one)")
            self.teacher = load_teacher(teacher, self.device)
            layer_map = self._layer_map()
            self._check_teacher()
        projections = nn.ModuleDict()
        if self.teacher is not None and self.teacher.hidden_size != sc.hidden_size:
            for j in layer_map:  # student width → teacher width, one Linear per distilled layer
                projections[str(j)] = nn.Linear(sc.hidden_size, self.teacher.hidden_size)
        copied = []
        if self.teacher is not None and c.copy_from_teacher and isinstance(self.teacher, MobileBertTeacher):
            copied = copy_from_teacher(self.student, self.teacher.model)
        elif self.teacher is not None and c.project_embeddings:  # a starting point: they train, unlike copies
            project_embeddings(self.student, self.teacher.model)
        self.copied = {f"student.{n}" for n in copied}
        self.model = Distiller(self.student, projections, layer_map, c.head_map, c.loss_weights(), c.alpha,
                               c.temperature, c.count_padding).to(self.device)
        self.schedule = strategies.Schedule(tuple(self._phases(sorted(layer_map))))
        if self.teacher is not None and any(p.mlm == "distill" for p in self.schedule.phases) \
                and not self.teacher.has_mlm_head:
            raise ValueError(
                f"teacher: the {c.strategy} strategy runs pre-training distillation (MLM against the teacher's "
                f"predictions), but the teacher {self.teacher.name!r} has no MLM head; use a teacher with one, "
                "or the progressive/joint strategy with steps=0 (layer-wise stage only)")

        self.global_step = 0
        self.tokens_seen = 0
        self.optimizer = None
        self.optimizer_phase: int | None = None
        self.checkpoint_dir = os.path.join(c.output_dir, "checkpoints")
        self.metrics_path = os.path.join(c.output_dir, "metrics.jsonl")
        self.last_metrics: dict = {}
        if self.is_main:
            os.makedirs(c.output_dir, exist_ok=True)
        resume_from = checkpoint.latest(self.checkpoint_dir) if c.resume == "auto" else (
            None if c.resume == "never" else c.resume)
        if resume_from is not None:
            self._resume(resume_from)
        elif self.is_main and os.path.exists(self.metrics_path):
            os.remove(self.metrics_path)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- setup ------------------------------------------------------------------------------------
    def _layer_map(self) -> dict[int, int]:
        c, n_s, n_t = self.config, self.student.config.num_hidden_layers, self.teacher.num_layers
        m = parse_layer_map(c.layer_map) if c.layer_map else uniform_layer_map(n_s, n_t)
        return check_layer_map(m, n_s, n_t)

    def _check_teacher(self) -> None:
        sc, t = self.student.config, self.teacher
        if t.vocab_size != sc.vocab_size:
            raise ValueError(f"teacher: its vocab_size={t.vocab_size} differs from the student's {sc.vocab_size} "
                             "(both must read the same token ids)")
        heads, head_map = sc.num_attention_heads, self.config.head_map
        if head_map is not None and (len(head_map) != heads or not all(0 <= h < t.num_heads for h in head_map)):
            raise ValueError(f"head_map: expected {heads} teacher head indices (one per student head) in "
                             f"0..{t.num_heads - 1}, got {list(head_map)}")
        if head_map is None and t.num_heads != heads and t.num_heads % heads:
            raise ValueError(f"head_map: the teacher has {t.num_heads} heads and the student {heads}, which does "
                             "not divide; give a head_map (one teacher head per student head)")
        max_pos = getattr(t.config, "max_position_embeddings", self.config.max_seq_len)
        if self.config.max_seq_len > max_pos:
            raise ValueError(f"max_seq_len: expected at most the teacher's max_position_embeddings={max_pos}, "
                             f"got {self.config.max_seq_len}")

    def _phases(self, layers: list[int]) -> list[strategies.Phase]:
        c, n = self.config, self.student.config.num_hidden_layers
        w = c.loss_weights()
        if c.strategy != "pretrain" and not any(w[k] for k in ("feature_map", "attention", "mean", "variance")):
            raise ValueError(f"weights: the {c.strategy} strategy needs a layer-wise loss with a positive weight, "
                             f"got {w}")
        if c.strategy == "pretrain":
            return strategies.pretrain(c.steps, n, c.warmup, c.decay)
        if c.strategy == "auxiliary":
            return strategies.auxiliary(c.steps, n, layers, c.warmup, c.decay)
        if c.strategy == "joint":
            return strategies.joint(c.layer_steps, c.steps, n, layers, c.warmup, c.decay)
        return strategies.progressive(c.layer_steps, c.steps, n, layers, c.during, c.after, c.freeze_finished,
                                      c.warmup, c.decay)

    def _enter_phase(self, index: int) -> None:
        """Fresh optimizer over the parameters this phase trains; the others stop taking gradients."""
        phase = self.schedule.phases[index]
        dropout = self.config.dropout if self.config.dropout is not None else phase.mlm == "labels"
        self.model.train(dropout)
        named = list(self.model.named_parameters())
        for name, p in named:
            p.requires_grad_(phase.multiplier(group_of(name, self.copied)) > 0)
        groups = param_groups(named, self.copied, phase, self.config.weight_decay)
        self.optimizer = build_optimizer(self.config.optimizer, groups, self.config.lr)
        self.optimizer_phase = index

    # -- one step -----------------------------------------------------------------------------------
    def _global_batch(self) -> tuple[list[tuple[dict, dict]], dict[str, int], int]:
        """This rank's micro-batches with their counts, the global counts, the global real-token count."""
        c = self.config
        examples = [next(self.stream) for _ in range(c.batch_size)]
        mb = self.micro_batch
        batches = [collate(examples[i:i + mb], self.vocab, c.seed, c.max_seq_len, c.pad_to_multiple_of, c.mask_prob)
                   for i in range(0, len(examples), mb)]
        counts = [{"positions": int(b["attention_mask"].numel() if c.count_padding else b["attention_mask"].sum()),
                   "masked": int((b["labels"] != IGNORE_INDEX).sum()), "examples": int(b["input_ids"].shape[0])}
                  for b in batches]
        totals = {k: sum(n[k] for n in counts) for k in counts[0]}
        tokens = sum(int(b["attention_mask"].sum()) for b in batches)
        mine = [({k: v.to(self.device) for k, v in b.items()}, n)
                for i, (b, n) in enumerate(zip(batches, counts)) if i % self.world == self.rank]
        return mine, totals, tokens

    def step(self) -> dict:
        c = self.config
        index, phase, k = self.schedule.at(self.global_step)
        if index != self.optimizer_phase:
            self._enter_phase(index)
        lr = set_learning_rates(self.optimizer, c.lr, phase, k)
        start = time.perf_counter()
        micro, totals, tokens = self._global_batch()
        weights = c.loss_weights()
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=c.precision == "bf16")
        self.optimizer.zero_grad(set_to_none=True)
        logged: dict[str, torch.Tensor] = {}
        with use_backend(c.backend):
            for batch, counts in micro:
                with autocast:
                    teacher_out = self._teacher(batch, phase)
                    parts = self.model(batch, phase, teacher_out)
                total = 0.0
                for name, value in parts.items():
                    kind = name.split("/")[0]
                    share = counts[COUNT_OF[kind]] / max(1, totals[COUNT_OF[kind]])
                    total = total + weights[kind] * share * value
                    logged[name] = logged.get(name, 0.0) + share * value.detach().float()
                total.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        distributed.reduce_gradients_(params)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, c.clip) if c.clip > 0 else None
        metrics = self._metrics(phase, index, lr, logged, grad_norm, tokens)  # raises before a non-finite update
        self.optimizer.step()
        self.global_step += 1
        self.tokens_seen += tokens
        metrics.update(step=self.global_step, tokens=self.tokens_seen,
                       tokens_per_s=tokens / max(time.perf_counter() - start, 1e-9))
        self.last_metrics = metrics
        if self.is_main and (self.global_step % c.log_every == 0 or self.global_step == self.schedule.total_steps):
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(metrics) + "\n")
        return metrics

    def _teacher(self, batch: dict, phase: strategies.Phase) -> TeacherOutput | None:
        if self.teacher is None:
            return None
        predicted = batch["labels"] != IGNORE_INDEX if phase.mlm == "distill" else None
        attention = bool(phase.layers) and self.model.weights["attention"] > 0
        return self.teacher(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                            self.model.teacher_depth(phase), attention, predicted)

    def _metrics(self, phase, index, lr, logged, grad_norm, tokens) -> dict:
        """Every loss component averaged over the global batch (summed across ranks), and their total."""
        names = sorted(logged)
        values = torch.stack([logged[n] for n in names])
        distributed.all_reduce_sum_([values])
        parts = dict(zip(names, values.tolist()))
        weights = self.config.loss_weights()
        sums: dict[str, float] = {}
        for name, v in parts.items():
            if "/" in name:
                kind = name.split("/")[0]
                sums[kind] = sums.get(kind, 0.0) + v
        loss = sum(weights[n.split("/")[0]] * v for n, v in parts.items())
        if not math.isfinite(loss):
            raise FloatingPointError(f"step {self.global_step + 1} ({phase.name}): the loss is {loss} "
                                     f"(components {parts}); the parameters were not updated")
        return {"step": self.global_step + 1, "phase": phase.name, "phase_index": index, "lr": lr, "loss": loss,
                **sums, **parts, "grad_norm": None if grad_norm is None else float(grad_norm),
                "tokens": self.tokens_seen + tokens, "tokens_per_s": None}

    # -- the loop -------------------------------------------------------------------------------------
    def fit(self, until: int | None = None) -> dict:
        """Train up to global step `until` (default: the end), checkpoint, and at the end export the model."""
        c = self.config
        end = self.schedule.total_steps if until is None else min(until, self.schedule.total_steps)
        bar = None
        if self.is_main and c.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.schedule.total_steps, initial=self.global_step, unit="step", dynamic_ncols=True)
        saved_at = None
        try:
            while self.global_step < end:
                m = self.step()
                if bar is not None:
                    bar.set_description(m["phase"])
                    bar.set_postfix({k: f"{v:.4g}" for k, v in m.items() if k in (
                        "loss", "feature_map", "attention", "mlm", "nsp", "lr")}, refresh=False)
                    bar.update(1)
                if c.save_every and self.global_step % c.save_every == 0:
                    self.save_checkpoint()
                    saved_at = self.global_step
        finally:
            if bar is not None:
                bar.close()
        if saved_at != self.global_step and self.optimizer is not None:
            self.save_checkpoint()
        if self.global_step == self.schedule.total_steps:
            self.export(os.path.join(c.output_dir, "model"))
        return self.last_metrics

    # -- checkpoints ----------------------------------------------------------------------------------
    def _fingerprint(self) -> dict:
        c = self.config
        return {"strategy": c.strategy, "steps": c.steps, "layer_steps": c.layer_steps, "batch_size": c.batch_size,
                "max_seq_len": c.max_seq_len, "seed": c.seed, "optimizer": c.optimizer,
                "phases": [p.name for p in self.schedule.phases]}

    def save_checkpoint(self) -> str | None:
        rngs = distributed.gather(checkpoint.rng_state())
        path = None
        if self.is_main:
            state = {"format": 1, "step": self.global_step, "optimizer_phase": self.optimizer_phase,
                     "student": self.student.state_dict(), "projections": self.model.projections.state_dict(),
                     "optimizer": self.optimizer.state_dict(), "scheduler": {"step": self.global_step},
                     "data": self.stream.state_dict(), "rng": rngs, "tokens_seen": self.tokens_seen,
                     "fingerprint": self._fingerprint()}
            path = checkpoint.save(state, self.checkpoint_dir, self.global_step, self.config.keep_checkpoints)
        distributed.barrier()
        return path

    def _resume(self, path: str) -> None:
        state = checkpoint.load(path)
        mine, theirs = self._fingerprint(), state["fingerprint"]
        for key in mine:
            if mine[key] != theirs.get(key):
                raise ValueError(f"resume: {path!r} was written with {key}={theirs.get(key)!r}, this run has "
                                 f"{key}={mine[key]!r}")
        if len(state["rng"]) != self.world:
            raise ValueError(f"resume: {path!r} was written by {len(state['rng'])} ranks, this run has {self.world}")
        self.student.load_state_dict(state["student"])
        self.model.projections.load_state_dict(state["projections"])
        self.stream.load_state_dict(state["data"])
        self.global_step = state["step"]
        self.tokens_seen = state["tokens_seen"]
        if state["optimizer_phase"] is not None:
            self._enter_phase(state["optimizer_phase"])
            self.optimizer.load_state_dict(state["optimizer"])
        checkpoint.set_rng_state(state["rng"][self.rank])
        if self.is_main and os.path.exists(self.metrics_path):  # drop what a crashed run logged after it
            with open(self.metrics_path) as f:
                kept = [line for line in f if line.strip() and json.loads(line)["step"] <= self.global_step]
            with open(self.metrics_path, "w") as f:
                f.writelines(kept)

    def export(self, folder: str) -> None:
        """The trained model in HF format (loads as a student, or as a teacher), with the vocabulary."""
        if self.is_main:
            self.student.save_pretrained(folder)
            vocab = self.config.tokenizer
            vocab = os.path.join(vocab, "vocab.txt") if os.path.isdir(vocab) else vocab
            shutil.copyfile(vocab, os.path.join(folder, "vocab.txt"))
        distributed.barrier()

