"""Counter-based dropout in Triton: the same `lowbias32` hash of (seed, stream, element index) as
`mbkernels/ops/dropout.py`, on uint32 lanes, so every backend keeps exactly the same elements."""

from __future__ import annotations

import triton
import triton.language as tl

from mbkernels.ops.dropout import _M32, _mix32


def _as_i32(v: int) -> int:
    """A uint32 value as the int32 with the same bits (Triton types a Python int argument as i32)."""
    v &= _M32
    return v - (1 << 32) if v >= (1 << 31) else v


def dropout_params(p: float, seed, stream: int) -> tuple[int, int, float]:
    """(key, threshold, scale) as kernel arguments: key and threshold are int32 bit patterns of the
    uint32 values of `ops/dropout.keep_mask`; an element is kept when hash(idx ^ key) >= threshold."""
    key = _mix32((_mix32(int(seed) & _M32) ^ (stream * 0x9E3779B9)) & _M32)
    threshold = min(int(p * 2**32), _M32)
    return _as_i32(key), _as_i32(threshold), 1.0 / (1.0 - p)


@triton.jit
def _mix32_tl(x):
    x = x ^ (x >> 16)
    x = x * tl.full(x.shape, 0x7FEB352D, tl.uint32)
    x = x ^ (x >> 15)
    x = x * tl.full(x.shape, 0x846CA68B, tl.uint32)
    return x ^ (x >> 16)


@triton.jit
def keep(idx, key, threshold):
    """Boolean keep mask for element indices `idx` (any integer tensor; the low 32 bits count)."""
    h = _mix32_tl(idx.to(tl.uint32) ^ key.to(tl.uint32, bitcast=True))
    return h >= threshold.to(tl.uint32, bitcast=True)
