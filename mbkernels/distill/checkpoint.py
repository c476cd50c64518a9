"""Training checkpoints that survive a kill at any moment, and are checked before they are used.

A checkpoint is one `torch.save`d dict (model, projections, optimizer, scheduler step, phase, data
position, every rank's RNG states) in `step-<step>.pt`, beside `step-<step>.pt.sha256` (its SHA-256,
in `sha256sum` format). `save` writes both under temporary names, fsyncs them and renames the digest
then the checkpoint into place, so a process killed mid-write (or a machine losing power) leaves the
previous checkpoints whole and at most an orphan temporary file, which the next save removes. The
digest catches what `torch.load` does not: a truncated file fails to load, but flipped bytes inside a
tensor load silently as wrong numbers. `latest` returns the newest checkpoint that verifies,
warning about each newer one that does not, so a run resumes from the one before a damaged file;
`load` of a damaged file raises naming the file, the expected and the found digest.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import tempfile
import warnings

import torch

_NAME = re.compile(r"^step-(\d{8})\.pt$")
_TEMP_PREFIX = ".step-"
DIGEST_SUFFIX = ".sha256"


def path_for(folder: str | os.PathLike, step: int) -> str:
    return os.path.join(folder, f"step-{step:08d}.pt")


class _HashingWriter:
    """The file object torch.save writes to: passes bytes to the file and hashes them on the way."""

    def __init__(self, f):
        self.f, self.sha256 = f, hashlib.sha256()

    def write(self, data) -> int:
        self.sha256.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def _write_durably(folder: str, write) -> str:
    """A temporary file in `folder` filled by `write(file)`, flushed to disk; returns its path."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=_TEMP_PREFIX, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.remove(tmp)
        raise
    return tmp


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(state: dict, folder: str | os.PathLike, step: int, keep: int = 2) -> str:
    """Write `state` as `folder/step-<step>.pt` (+ its digest) atomically, then drop all but the newest `keep`."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):  # what a process killed mid-write left behind (one writer per folder)
        if name.startswith(_TEMP_PREFIX) and name.endswith(".tmp"):
            os.remove(os.path.join(folder, name))
    final = path_for(folder, step)
    hashing: list[_HashingWriter] = []

    def write_state(f):
        hashing.append(_HashingWriter(f))
        torch.save(state, hashing[0])

    tmp = _write_durably(folder, write_state)
    try:
        line = f"{hashing[0].sha256.hexdigest()}  {os.path.basename(final)}\n".encode()
        digest_tmp = _write_durably(folder, lambda f: f.write(line))
        os.replace(digest_tmp, final + DIGEST_SUFFIX)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fsync_dir(folder)
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        os.remove(old)
        if os.path.exists(old + DIGEST_SUFFIX):
            os.remove(old + DIGEST_SUFFIX)
    return final


def list_checkpoints(folder: str | os.PathLike) -> list[str]:
    """Checkpoint files in `folder`, oldest first."""
    if not os.path.isdir(folder):
        return []
    names = sorted(n for n in os.listdir(folder) if _NAME.match(n))
    return [os.path.join(folder, n) for n in names]


def damage(path: str | os.PathLike) -> str | None:
    """What is wrong with the checkpoint file at `path`, or None when it is whole.

    With a digest file: the SHA-256 must match. Without one (a checkpoint written before digests),
    the file must load.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        return "the file does not exist"
    try:
        with open(path + DIGEST_SUFFIX) as f:
            expected = f.read().split()[0]
    except FileNotFoundError:
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            return f"it does not load ({type(e).__name__}: {e})"
        return None
    except (OSError, IndexError) as e:
        return f"its digest file {path + DIGEST_SUFFIX!r} is unreadable ({type(e).__name__}: {e})"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != expected:
        return (f"expected SHA-256 {expected} (from {os.path.basename(path) + DIGEST_SUFFIX}), got "
                f"{h.hexdigest()} over {os.path.getsize(path)} bytes: the file is truncated or corrupt")
    return None


def latest(folder: str | os.PathLike) -> str | None:
    """The newest checkpoint in `folder` that verifies (a warning names each newer one that does not)."""
    for path in reversed(list_checkpoints(folder)):
        problem = damage(path)
        if problem is None:
            return path
        warnings.warn(f"checkpoint {path!r} skipped: {problem}; trying the previous one", stacklevel=2)
    return None


def load(path: str | os.PathLike) -> dict:
    problem = damage(path)
    if problem is not None:
        raise ValueError(f"resume: could not read checkpoint {os.fspath(path)!r}: {problem}")
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
