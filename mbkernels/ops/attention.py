"""attention: softmax(QKᵀ/√d + mask) V on [B, H, S, D], optionally returning the pre-softmax
masked scores (masked keys hold finfo(dtype).min) that attention transfer needs.

On CPU in float32 both directions run the torch-free attention core (`_C.attention_forward`,
`_C.attention_backward`; csrc/core/ops/attention.h): any head size, any (batch, head, row) strides,
attention dropout from the seed's counter-based mask, no B×H×S×S buffer unless scores are asked for;
the backward recomputes P per query block and takes the scores' gradient too. Other dtypes run the
reference. On CUDA, or under `use_backend("triton")`, both directions run the flash-style kernels
of `mbkernels/triton/attention.py` (head sizes 16–256, powers of two; others run the reference).
"""

from __future__ import annotations

import torch

from mbkernels import backend
from mbkernels.ops import _cpu, reference
from mbkernels.ops._registry import Kernel, OpDef, define


def _supports_cpu(q, k, v, key_mask, dropout_p, seed, return_scores):
    # Dropout without a seed is torch's RNG dropout: only the reference has it.
    return _cpu.float32(q) and not (dropout_p > 0 and seed is None)


def _operands(q, k, v, mask, dropout_p, seed):
    """`_C`'s leading arguments; `mask` is the key mask as bytes (`_cpu.key_mask_bytes`), held by the
    caller over the call like the returned copies."""
    q, k, v = _cpu.heads(q), _cpu.heads(k), _cpu.heads(v)
    b, h, sq, d = q.shape
    return (q.data_ptr(), _cpu.head_strides(q), k.data_ptr(), _cpu.head_strides(k), v.data_ptr(),
            _cpu.head_strides(v), b, h, sq, k.shape[2], d, _cpu.ptr(mask),
            dropout_p, _cpu.seed_of(seed)), (q, k, v)


def _cpu_forward(q, k, v, key_mask, dropout_p, seed, return_scores, *, save):
    b, h, sq, _ = q.shape
    ctx = q.new_empty((b, h, sq, v.shape[3]))
    scores = q.new_empty((b, h, sq, k.shape[2]) if return_scores else (0,))
    mask = _cpu.key_mask_bytes(key_mask)  # kept alive over the call
    args, held = _operands(q, k, v, mask, dropout_p, seed)  # held: copies whose pointers are in args
    backend._C.attention_forward(*args, ctx.data_ptr(), _cpu.head_strides(ctx),
                                 scores.data_ptr() if return_scores else 0, _cpu.threads())
    return ctx, scores, []


def _cpu_backward(grads, needs_grad, saved, q, k, v, key_mask, dropout_p, seed, return_scores):
    b, h, sq, _ = q.shape
    dscores = grads[1].contiguous() if return_scores and grads[1].numel() else None
    # Only the scores used: autograd hands an empty gradient for the context.
    dctx = grads[0] if grads[0].numel() else q.new_zeros((b, h, sq, v.shape[3]))
    dctx = _cpu.heads(dctx)
    mask = _cpu.key_mask_bytes(key_mask)
    args, (q, k, v) = _operands(q, k, v, mask, dropout_p, seed)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    backend._C.attention_backward(*args, dctx.data_ptr(), _cpu.head_strides(dctx), _cpu.ptr(dscores),
                                  dq.data_ptr(), _cpu.head_strides(dq), dk.data_ptr(), _cpu.head_strides(dk),
                                  dv.data_ptr(), _cpu.head_strides(dv), _cpu.threads())
    return [dq, dk, dv, None, None]


def _triton_attention(q, k, v):
    """The Triton attention module when it runs these inputs, else None."""
    from mbkernels import triton as mbt
    if not mbt.available():
        return None
    from mbkernels.triton import attention as tk
    return tk if tk.supported(q, k, v) else None


def _triton_forward(q, k, v, key_mask, dropout_p, seed, return_scores, *, save):
    return (*_triton_attention(q, k, v).attention_forward(q, k, v, key_mask, dropout_p, seed, return_scores), [])


def _triton_backward(grads, needs_grad, saved, q, k, v, key_mask, dropout_p, seed, return_scores):
    dscores = grads[1] if return_scores and grads[1].numel() else None
    dq, dk, dv = _triton_attention(q, k, v).attention_backward(grads[0], dscores, q, k, v, key_mask, dropout_p,
                                                               seed)
    return [dq, dk, dv, None, None]


def _fake(q, k, v, key_mask, dropout_p, seed, return_scores):
    b, h, s, _ = q.shape
    scores = q.new_empty((b, h, s, k.shape[2])) if return_scores else q.new_empty(0)
    return q.new_empty((b, h, s, v.shape[3])), scores


ATTENTION = define(OpDef(
    name="attention",
    args="Tensor q, Tensor k, Tensor v, Tensor? key_mask, float dropout_p, Tensor? seed, bool return_scores",
    outputs=2,
    reference=reference.attention,
    fake=_fake,
    kernels=(Kernel("cpu", _supports_cpu, _cpu_forward, _cpu_backward),
             Kernel("triton", lambda q, k, v, *_: _triton_attention(q, k, v) is not None, _triton_forward,
                    _triton_backward)),
))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None,
              dropout_p: float = 0.0, return_scores: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-head attention; returns (context [B, H, S, D], scores [B, H, S, S] or an empty tensor)."""
    return ATTENTION(q, k, v, key_mask, dropout_p, None, return_scores)
