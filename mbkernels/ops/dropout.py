"""Counter-based dropout masks: the same (seed, stream, element index) keeps the same element on
every backend, so a backward recomputes its forward's mask from the seed instead of storing it.

The hash is Wellons' `lowbias32` on 32-bit lanes held in int64 (torch has no uint32 arithmetic);
the low 32 bits of a wrapped int64 product are the uint32 product, so the masks below equal a
plain uint32 implementation in C++ or Triton.
"""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor | int):
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def new_seed(device: torch.device | None = None) -> torch.Tensor:
    """A fresh seed drawn from torch's default CPU generator (so `torch.manual_seed` governs it).

    A 0-d int64 tensor rather than a Python int: passing it to an op needs no `.item()`, which
    keeps `torch.compile` graphs unbroken.
    """
    return torch.randint(0, 2**31 - 1, (), dtype=torch.int64)


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, seed: torch.Tensor, stream: int,
              device: torch.device) -> torch.Tensor:
    """Boolean mask of kept elements (probability 1 - p) for a contiguous tensor of `shape`."""
    numel = 1
    for s in shape:
        numel *= s
    key = _mix32((_mix32(int(seed) & _M32) ^ (stream * 0x9E3779B9)) & _M32)
    idx = torch.arange(numel, dtype=torch.int64, device=device)
    h = _mix32((idx & _M32) ^ key)
    threshold = min(int(p * 2**32), _M32)
    return (h >= threshold).view(shape)


def dropout(x: torch.Tensor, p: float, seed: torch.Tensor | None, stream: int = 0) -> torch.Tensor:
    """Inverted dropout; `seed=None` draws from torch's RNG (the reference backend's plain path)."""
    if p == 0.0:
        return x
    if seed is None:
        return torch.nn.functional.dropout(x, p, training=True)
    keep = keep_mask(x.shape, p, seed, stream, x.device)
    return x * keep.to(x.dtype) * (1.0 / (1.0 - p))
