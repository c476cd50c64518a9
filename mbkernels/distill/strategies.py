"""Strategies: which losses and which learning rates are on at each step.

A strategy is a list of `Phase`s run one after the other. A phase names the student layers whose
layer-wise losses are on, whether the MLM/NSP losses are on (and against what), and a learning-rate
multiplier per parameter group. Groups are `layer.<j>` (student layer j, 1-based, with its
projection), `embeddings`, `heads` (MLM/NSP heads, pooler) and `copied` (parameters copied from the
teacher, frozen while only layer losses are on). The optimizer is rebuilt at every phase boundary
(fresh moments) and a phase warms its learning rate up from 0 over its first `warmup` fraction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

DECAYS = ("constant", "linear", "cosine")
MLM_MODES = (None, "labels", "distill")
STRATEGIES = ("pretrain", "auxiliary", "joint", "progressive")


@dataclass(frozen=True)
class Phase:
    name: str
    steps: int
    layers: tuple[int, ...] = ()        # student layers (1-based) whose layer-wise losses are on
    mlm: str | None = None              # None, "labels" (true labels only) or "distill" (teacher + labels)
    nsp: bool = False
    multipliers: dict[str, float] = field(default_factory=dict)  # group -> lr multiplier (absent: 0)
    warmup: float = 0.1                 # fraction of the phase's steps
    decay: str = "constant"

    def __post_init__(self) -> None:
        if not (isinstance(self.steps, int) and self.steps > 0):
            raise ValueError(f"Phase {self.name!r}: steps: expected a positive int, got {self.steps!r}")
        if self.mlm not in MLM_MODES:
            raise ValueError(f"Phase {self.name!r}: mlm: expected one of {MLM_MODES}, got {self.mlm!r}")
        if self.decay not in DECAYS:
            raise ValueError(f"Phase {self.name!r}: decay: expected one of {DECAYS}, got {self.decay!r}")
        if not 0.0 <= self.warmup <= 1.0:
            raise ValueError(f"Phase {self.name!r}: warmup: expected a fraction in [0, 1], got {self.warmup!r}")

    def multiplier(self, group: str) -> float:
        return self.multipliers.get(group, 0.0)

    def lr_factor(self, step_in_phase: int) -> float:
        """Warm-up then decay, as a factor of the base learning rate, for 0 <= step_in_phase < steps."""
        warm = round(self.warmup * self.steps)
        if step_in_phase < warm:
            return (step_in_phase + 1) / warm
        if self.decay == "constant":
            return 1.0
        progress = (step_in_phase - warm) / max(1, self.steps - warm)
        return 1.0 - progress if self.decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))


def layer_groups(num_layers: int) -> list[str]:
    return [f"layer.{j}" for j in range(1, num_layers + 1)]


def _all_on(num_layers: int) -> dict[str, float]:
    return {g: 1.0 for g in (*layer_groups(num_layers), "embeddings", "heads", "copied")}


def _owner(layer: int, distilled: Sequence[int]) -> int | None:
    """Index of the phase that trains `layer`: the first distilled layer at or above it.

    A layer without losses of its own (a user's layer map may skip it) feeds the next distilled
    layer and is trained with it; layers above the last distilled one get no layer-wise signal.
    """
    for k, d in enumerate(distilled):
        if d >= layer:
            return k
    return None


def _check_layers(distilled: Sequence[int], num_layers: int) -> tuple[int, ...]:
    distilled = tuple(sorted(distilled))
    if not distilled or distilled[0] < 1 or distilled[-1] > num_layers or len(set(distilled)) != len(distilled):
        raise ValueError(f"layers: expected distinct student layers in 1..{num_layers}, got {list(distilled)}")
    return distilled


def pretrain(steps: int, num_layers: int, warmup: float = 0.1, decay: str = "linear") -> list[Phase]:
    """Plain MLM + NSP pre-training on true labels, no teacher (how an IB-BERT teacher is made)."""
    return [Phase("pretrain", steps, (), "labels", True, _all_on(num_layers), warmup, decay)]


def stage2(steps: int, num_layers: int, warmup: float = 0.1, decay: str = "linear") -> Phase:
    """Pre-training distillation: MLM against the teacher's soft targets mixed with labels, NSP."""
    return Phase("pretraining distillation", steps, (), "distill", True, _all_on(num_layers), warmup, decay)


def auxiliary(steps: int, num_layers: int, layers: Sequence[int], warmup: float = 0.1,
              decay: str = "linear") -> list[Phase]:
    """All layer losses and MLM/NSP distillation together, in one stage."""
    layers = _check_layers(layers, num_layers)
    return [Phase("auxiliary", steps, layers, "distill", True, _all_on(num_layers), warmup, decay)]


def joint(stage1_steps: int, stage2_steps: int, num_layers: int, layers: Sequence[int], warmup: float = 0.1,
          decay: str = "linear") -> list[Phase]:
    """All layer losses together, then pre-training distillation (skipped when stage2_steps is 0)."""
    layers = _check_layers(layers, num_layers)
    mult = {f"layer.{j}": 1.0 for j in range(1, num_layers + 1) if _owner(j, layers) is not None}
    mult["embeddings"] = 1.0
    phases = [Phase("layer-wise", stage1_steps, layers, None, False, mult, warmup, "constant")]
    return phases + ([stage2(stage2_steps, num_layers, warmup, decay)] if stage2_steps else [])


def progressive(steps_per_layer: int, stage2_steps: int, num_layers: int, layers: Sequence[int],
                during: float = 3.0, after: float = 0.3, freeze_finished: bool = False,
                warmup: float = 0.1, decay: str = "linear") -> list[Phase]:
    """One phase per distilled layer, then pre-training distillation (skipped when stage2_steps is 0).

    In the phase of layer l only l's losses are on; learning-rate multipliers are 0 for the layers
    above (not trained yet), `during` for l and `after` for the finished layers below (Google's code:
    3.0 and 0.3; `freeze_finished` freezes them instead, as the paper also describes). Embeddings that
    were not copied from the teacher train with the first layer.
    """
    layers = _check_layers(layers, num_layers)
    phases = []
    for k, l in enumerate(layers):
        mult = {}
        for j in range(1, num_layers + 1):
            owner = _owner(j, layers)
            if owner == k:
                mult[f"layer.{j}"] = during
            elif owner is not None and owner < k and not freeze_finished:
                mult[f"layer.{j}"] = after
        mult["embeddings"] = during if k == 0 else (0.0 if freeze_finished else after)
        phases.append(Phase(f"layer {l}", steps_per_layer, (l,), None, False, mult, warmup, "constant"))
    return phases + ([stage2(stage2_steps, num_layers, warmup, decay)] if stage2_steps else [])


@dataclass(frozen=True)
class Schedule:
    """The phases laid end to end on the global step axis."""

    phases: tuple[Phase, ...]

    def __post_init__(self) -> None:
        if not self.phases:
            raise ValueError("Schedule: expected at least one phase, got none")

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)

    def at(self, step: int) -> tuple[int, Phase, int]:
        """(phase index, phase, step inside it) for global step `step` (0-based)."""
        if not 0 <= step < self.total_steps:
            raise ValueError(f"step: expected 0 <= step < {self.total_steps}, got {step}")
        for i, p in enumerate(self.phases):
            if step < p.steps:
                return i, p, step
            step -= p.steps
        raise AssertionError("unreachable")

    def start_of(self, index: int) -> int:
        return sum(p.steps for p in self.phases[:index])
