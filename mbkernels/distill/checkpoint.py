"""Training checkpoints: written whole or not at all (temp file + os.replace), found by step number.

A checkpoint is one `torch.save`d dict (model, projections, optimizer, scheduler step, phase, data
position, every rank's RNG states); `load` reads it with `weights_only=True`.
"""

from __future__ import annotations

import os
import random
import re
import tempfile

import torch

_NAME = re.compile(r"^step-(\d{8})\.pt$")


def path_for(folder: str | os.PathLike, step: int) -> str:
    return os.path.join(folder, f"step-{step:08d}.pt")


def save(state: dict, folder: str | os.PathLike, step: int, keep: int = 2) -> str:
    """Write `state` as `folder/step-<step>.pt` atomically, then drop all but the newest `keep`."""
    os.makedirs(folder, exist_ok=True)
    final = path_for(folder, step)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".step-", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        os.remove(old)
    return final


def list_checkpoints(folder: str | os.PathLike) -> list[str]:
    """Checkpoint files in `folder`, oldest first."""
    if not os.path.isdir(folder):
        return []
    names = sorted(n for n in os.listdir(folder) if _NAME.match(n))
    return [os.path.join(folder, n) for n in names]


def latest(folder: str | os.PathLike) -> str | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def load(path: str | os.PathLike) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"resume: could not read checkpoint {os.fspath(path)!r} ({type(e).__name__}: {e})") from e


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
