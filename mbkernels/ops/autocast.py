"""Autocast for the custom ops: inside `torch.autocast(...)` every op casts its floating-point
inputs to bfloat16 and runs there, so mixed-precision training runs the kernels in bf16 while the
fp32 master weights receive fp32 gradients (autograd casts them back through the input casts).

bf16 is the one autocast dtype of the ops (the training dtype, docs/design.md "Anatomy of an op"; MobileBERT's 1e7
activations overflow fp16): `torch.library.register_autocast` takes one target dtype per device,
so an fp16 autocast region also runs the ops in bf16. Models cast to fp16 (`.half()`) run fp16.
`register_autocast` exists from torch 2.5 on; before that the ops run in whatever dtype they get.
"""

from __future__ import annotations

import torch

from mbkernels.ops._registry import OPS

DTYPE = torch.bfloat16


def register() -> list[str]:
    """Register every defined op for CUDA and CPU autocast; returns the op names registered."""
    if not hasattr(torch.library, "register_autocast"):  # torch < 2.5
        return []
    for opdef in OPS.values():
        for device in ("cuda", "cpu"):
            torch.library.register_autocast(f"mbkernels::{opdef.name}", device, DTYPE)
    return list(OPS)


REGISTERED = register()
