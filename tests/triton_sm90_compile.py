"""Compile every Triton kernel specialization the ops launch for an H100 (sm_90), without a GPU.

The interpreter runs kernels as numpy code: it accepts things the GPU compiler rejects (a `tl.dot`
smaller than 16×16, mixed operand dtypes, a bf16 dot) and never takes the GPU branches (native bf16
`tl.dot`, split-K reductions). This script drives every launcher in `mbkernels/triton/` with CPU
tensors in fp32, bf16 and fp16 while Triton's active driver claims an sm_90 device: each launch
compiles the kernel to a cubin (ptxas included) and returns without running it. The outputs are
therefore garbage; only the compilation is checked. Run without TRITON_INTERPRET:

    python tests/triton_sm90_compile.py        # prints the compiled specializations per kernel

About 2.5 CPU-minutes on a cold Triton cache (444 launches, each distinct specialization compiled once).
"""

from __future__ import annotations

import os
import sys

import torch
from triton.backends.compiler import GPUTarget
from triton.runtime import driver
from triton.runtime.jit import JITFunction

assert os.environ.get("TRITON_INTERPRET") != "1", "run without TRITON_INTERPRET: this compiles for the GPU"


class _SM90:
    """The parts of a Triton driver that compilation asks for."""

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)


compiled: dict[str, set[int]] = {}
_run = JITFunction.run


def _compile_only(self, *args, grid, warmup, **kwargs):
    kernel = _run(self, *args, grid=grid, warmup=True, **kwargs)
    compiled.setdefault(self.fn.__name__, set()).add(hash(kernel.asm["cubin"]))
    return kernel


def main() -> int:
    driver.set_active(_SM90())
    JITFunction.run = _compile_only
    from op_cases import (attention_case, bottleneck_attention_case, embedding_case, ffn_stack_case,
                          linear_norm_case, nonorm_case)

    from mbkernels.triton import attention as tattn
    from mbkernels.triton import bottleneck_attention as tbn
    from mbkernels.triton import embedding as temb
    from mbkernels.triton import ffn_stack as tffn
    from mbkernels.triton import gemm
    from mbkernels.triton import linear_norm as tlin
    from mbkernels.triton import nonorm as tnorm

    seed = torch.tensor(5)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        _, (x, w, b, r), _ = nonorm_case(b=2, s=5, n=48, dtype=dtype)
        x, w, b, r = (t.detach() for t in (x, w, b, r))
        for ln in (False, True):
            tnorm.norm_forward(x, w, b, r, ln, 1e-5)
            tnorm.norm_backward(x, x, w, r, ln, 1e-5)
        _, args, _ = linear_norm_case(b=2, s=5, k=64, n=32, dtype=dtype)
        x, W, bias, nw, nb, r = (t.detach() for t in args)
        for norm in ("nonorm", "layernorm"):
            y = tlin.linear_norm_forward(x, W, bias, nw, nb, r, norm, 1e-12, 0.1, seed)
            tlin.linear_norm_backward(y, x, W, bias, nw, nb, r, norm, 1e-12, 0.1, seed)
        gemm.matmul(x.reshape(-1, 64).t(), x.reshape(-1, 64), row_sums=True, splits=3)
        _, args, _ = attention_case(b=2, h=2, s=9, d=32, dtype=dtype)
        q, k, v, mask = (t.detach() for t in args)
        o, _ = tattn.attention_forward(q, k, v, mask, 0.1, seed, True)
        tattn.attention_backward(o, torch.randn(2, 2, 9, 9, dtype=dtype), q, k, v, mask, 0.1, seed)
        for act, norm in (("relu", "nonorm"), ("gelu", "layernorm")):
            _, args, kw = ffn_stack_case(b=2, s=5, width=128, inter=512, n=4, act=act, norm=norm, dtype=dtype)
            x, *lists = ([t.detach() for t in a] if isinstance(a, list) else a.detach() for a in args)
            y = tffn.ffn_stack_forward(x, *lists, act, norm, kw["eps"], 0.1, seed)
            tffn.ffn_stack_backward(y, x, *lists, act, norm, kw["eps"], 0.1, seed)
        for mode in ("shared", "none"):
            _, args, kw = bottleneck_attention_case(b=2, s=9, hidden=512, intra=128, heads=4, mode=mode, dtype=dtype)
            h, mask, *weights = (t.detach() if isinstance(t, torch.Tensor) else t for t in args)
            rest = (kw["num_heads"], mode, kw["norm"], kw["eps"], 0.1, 0.1, seed)
            out, _ = tbn.bottleneck_attention_forward(h, mask, weights, *rest, True)
            tbn.bottleneck_attention_backward(out, None, h, mask, weights, *rest)
        for trigram in (True, False):
            _, args, kw = embedding_case(b=2, s=9, vocab=100, emb=128, hidden=512, trigram=trigram, dtype=dtype)
            args = tuple(t.detach() if isinstance(t, torch.Tensor) else t for t in args)
            rest = (kw["padding_idx"], trigram, kw["norm"], kw["eps"], 0.1, seed)
            y = temb.embedding_forward(*args, *rest)
            temb.embedding_backward(y, *args, *rest)
    for name, cubins in sorted(compiled.items()):
        print(f"{name}: {len(cubins)} distinct cubins")
    print(f"compiled {sum(map(len, compiled.values()))} distinct specializations of {len(compiled)} kernels for sm_90")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
