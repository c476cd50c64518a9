"""Optimizers over learning-rate groups: AdamW (torch) or LAMB (pytorch-optimizer), no decay on
biases and norms, and the per-step learning rate = base · phase warm-up/decay · group multiplier."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from mbkernels.distill.strategies import Phase

OPTIMIZERS = ("lamb", "adamw")


def group_of(name: str, copied: set[str]) -> str:
    """The learning-rate group of a parameter of the trained module (student + projections)."""
    if name in copied:
        return "copied"
    if name.startswith("projections."):
        return f"layer.{name.split('.')[1]}"
    if name.startswith("student.mobilebert.encoder.layer."):
        return f"layer.{int(name.split('.')[4]) + 1}"
    if name.startswith("student.mobilebert.embeddings."):
        return "embeddings"
    return "heads"


def _no_decay(name: str, p: torch.Tensor) -> bool:
    return p.dim() < 2 or "LayerNorm" in name or name.endswith(".bias")


def param_groups(named: Iterable[tuple[str, torch.nn.Parameter]], copied: set[str], phase: Phase,
                 weight_decay: float) -> list[dict]:
    """One optimizer group per (lr group, decay or not) holding the parameters the phase trains;
    parameters with multiplier 0 are left out (and should get requires_grad False)."""
    groups: dict[tuple[str, bool], dict] = {}
    for name, p in named:
        group = group_of(name, copied)
        mult = phase.multiplier(group)
        if mult == 0:
            continue
        nd = _no_decay(name, p)
        g = groups.setdefault((group, nd), {"params": [], "names": [], "group": group, "multiplier": mult,
                                            "weight_decay": 0.0 if nd else weight_decay})
        g["params"].append(p)
        g["names"].append(name)
    return list(groups.values())


_FUSED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def adamw(groups: list[dict], lr: float, betas=(0.9, 0.999), eps: float = 1e-8) -> torch.optim.AdamW:
    """torch's AdamW with its fused kernel wherever every parameter allows it (floating point on the
    CPU or CUDA), else torch's default. On the 24-layer model's fine-tuning step at 32x64 (2-core
    Zen 3) the fused step took 35 ms against 126 ms for the default (foreach) one, with the same
    update rule and state (checkpoints load into either)."""
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in _FUSED_DTYPES for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)


def build_optimizer(kind: str, groups: list[dict], lr: float, betas=(0.9, 0.999), eps: float = 1e-6):
    if not groups:
        raise ValueError("optimizer: this phase trains no parameters (every learning-rate multiplier is 0)")
    if kind == "adamw":
        return adamw(groups, lr=lr, betas=betas, eps=eps)
    if kind == "lamb":
        from pytorch_optimizer import Lamb

        # No pre-normalisation: the trainer clips the global gradient norm itself.
        return Lamb(groups, lr=lr, betas=betas, eps=eps)
    raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {kind!r}")


def set_learning_rates(optimizer: torch.optim.Optimizer, base_lr: float, phase: Phase, step_in_phase: int) -> float:
    """Write each group's lr for this step; returns the phase-level lr (before multipliers)."""
    lr = base_lr * phase.lr_factor(step_in_phase)
    for g in optimizer.param_groups:
        g["lr"] = lr * g["multiplier"]
    return lr
