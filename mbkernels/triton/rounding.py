"""Conversions to a kernel's storage dtype that round as the GPU does.

Triton's CPU interpreter converts fp32 → bf16 by truncation (round toward zero, even when asked for
"rtne"), which doubles bf16 errors next to a GPU's round-to-nearest-even and next to torch. Under
the interpreter `cast` rounds the fp32 bits to nearest even first, so that the truncation is exact;
compiled for a GPU it is a plain `.to(dtype)` (the branch is a compile-time constant).
"""

from __future__ import annotations

import triton
import triton.language as tl

from mbkernels.triton import interpreting

_INTERPRET = tl.constexpr(interpreting())


@triton.jit
def cast(x, dtype: tl.constexpr):
    if _INTERPRET:
        if dtype == tl.bfloat16:
            bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
            bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
            x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)
