"""bottleneck_attention in Triton: the attention half of a MobileBERT block from three kernels.

Forward, mode "shared" (MobileBERT):
  1. one grouped `linear_norm` GEMM over the 512-wide input h: [Wi; Wa; Wv] → [b | s | v] in one
     [M, 3·128] buffer, the norm applied to the b and s groups in the epilogue;
  2. one grouped GEMM over s (read in place, row stride 3·128): [Wq; Wk] → [q | k];
  3. the flash attention kernel reading q, k, v as head views of those buffers (no transposes) and
     writing the context straight into [B, S, H·D] rows; no B×H×S×S buffer unless scores are asked;
  4. `linear_norm`: ctx Woᵀ + bo, hidden dropout (stream 1), + b, norm.
The other modes only change which projections share the first GEMM and what the second reads
("bottleneck": Q, K, V from b; "full": b, Q, K, V all from h; "none": Q, K, V from h, residual h).

Backward (recompute): step 1 with the norm off (pre-norm values, normalized by the norm kernel),
step 2, the attention forward (its context, row maxima and sums are reused by the attention
backward); then `linear_norm`'s Triton backward, the flash attention backward
writing dq, dk, dv into the gradient buffers of the grouped GEMMs, the second GEMM's dX/dW, the norm
backward of the normed groups, and the first GEMM's dX/dW: every GEMM is the shared Triton GEMM.
Weights are concatenated per call (a few hundred KB; their gradients are split and copied back).

Widths: MobileBERT's 128 fit `linear_norm`'s fused norm epilogue; the IB-BERT teacher's 1024 (four
heads of 256, mode "full") run the same steps with the GEMMs tiled over columns and the norms as a
second pass (`linear_norm.grouped_forward`), up to the norm kernel's 8192.
"""

from __future__ import annotations

import torch

from mbkernels.triton import attention as tattn
from mbkernels.triton import gemm
from mbkernels.triton import linear_norm as tlin
from mbkernels.triton import nonorm as tnorm

# Where each projection's (weight, bias, norm weight, norm bias) sit among the op's weight arguments.
SLOTS = {"input": (0, 1, 2, 3), "attention": (4, 5, 6, 7), "query": (8, 9, None, None),
         "key": (10, 11, None, None), "value": (12, 13, None, None), "output": (14, 15, 16, 17)}

# mode → (projections of h, the normed ones first; (source, projections of it) or None)
PLANS = {
    "shared": (("input", "attention", "value"), ("attention", ("query", "key"))),
    "bottleneck": (("input",), ("input", ("query", "key", "value"))),
    "full": (("input", "query", "key", "value"), None),
    "none": (("query", "key", "value"), None),
}
NORMED = ("input", "attention")


def _layout(weights):
    """{projection: (weight, bias, norm_weight, norm_bias)} from the op's 18 weight arguments."""
    return {p: tuple(weights[i] if i is not None else None for i in slots) for p, slots in SLOTS.items()}


def _used(mode) -> tuple[str, ...]:
    first, second = PLANS[mode]
    return (*first, *(second[1] if second else ()), "output")


def supported(h, weights, num_heads: int, mode: str, norm: str) -> bool:
    if mode not in PLANS or norm not in ("nonorm", "layernorm") or h.dim() != 3 or h.shape[1] == 0:
        return False
    params = _layout(weights)
    used = [params[p] for p in _used(mode)]
    if any(w is None or b is None or w.dtype != h.dtype for w, b, *_ in used):
        return False
    width = params["query"][0].shape[0]
    return (h.dtype in tlin.DTYPES and all(w.shape[0] == width for w, *_ in used) and width <= tnorm.MAX_N
            and width % num_heads == 0 and width // num_heads in tattn.HEAD_SIZES)


def _cat(params, names, index):
    return torch.cat([params[p][index] for p in names]) if names else None


def _heads(t2, b, s, num_heads):
    """[M, N] rows (any row stride) as [B, H, S, D] heads, in place."""
    return t2.view(b, s, num_heads, -1).transpose(1, 2)


class _Plan:
    """The mode's projections resolved against the weights: the two grouped GEMMs' concatenated
    weights, and where each projection's output lives."""

    def __init__(self, weights, mode):
        self.params = _layout(weights)
        self.first, second = PLANS[mode]
        self.source, self.second = second if second else (None, ())
        self.normed = tuple(p for p in self.first if p in NORMED)
        self.width = self.params["output"][0].shape[0]

    def first_gemm(self):
        p = self.params
        return _cat(p, self.first, 0), _cat(p, self.first, 1), _cat(p, self.normed, 2), _cat(p, self.normed, 3)

    def seg(self, y1, y2, name):
        n = self.width
        if name in self.first:
            j = self.first.index(name)
            return y1[:, j * n:(j + 1) * n]
        j = self.second.index(name)
        return y2[:, j * n:(j + 1) * n]


def _project(h2, plan, norm, eps, pre_norm: bool):
    """(y1, y2, the normed outputs {name: rows}); y1 holds pre-norm values when `pre_norm`."""
    w1, b1, nw1, nb1 = plan.first_gemm()
    y1 = tlin.grouped_forward(h2, w1, b1, nw1, nb1, "none" if pre_norm else norm, len(plan.normed), eps,
                              len(plan.first))
    normed = {}
    for name in plan.normed:
        seg = plan.seg(y1, None, name)
        if pre_norm:
            _, _, nw, nb = plan.params[name]
            seg = tlin.rows_of(tnorm.norm_forward(seg.contiguous(), nw, nb, None, norm == "layernorm", eps), plan.width)
        normed[name] = seg
    y2 = None
    if plan.second:
        p = plan.params
        y2 = tlin.grouped_forward(normed[plan.source], _cat(p, plan.second, 0), _cat(p, plan.second, 1), None,
                                  None, "none", 0, 0.0, len(plan.second))
    return y1, y2, normed


def _attend(h2, b, s, plan, key_mask, num_heads, norm, eps, attn_p, seed, return_scores, pre_norm):
    y1, y2, normed = _project(h2, plan, norm, eps, pre_norm)
    q, k, v = (_heads(plan.seg(y1, y2, n), b, s, num_heads) for n in ("query", "key", "value"))
    # The backward keeps the context in fp32 for the attention backward's rowsum(dO∘O), which
    # cancels against dP (a rounded context costs bf16 gradients a factor of 2-3 in accuracy).
    ctx2 = h2.new_empty((b * s, plan.width), dtype=torch.float32 if pre_norm else h2.dtype)
    _, scores, *stats = tattn.forward_with_stats(q, k, v, key_mask, attn_p, seed, return_scores,
                                                 out=_heads(ctx2, b, s, num_heads))
    return y1, y2, normed, (q, k, v), ctx2, scores, stats


def bottleneck_attention_forward(h, key_mask, weights, num_heads, mode, norm, eps, attn_p, hidden_p, seed,
                                 return_scores):
    b, s, hidden = h.shape
    plan = _Plan(weights, mode)
    h2 = tlin.rows_of(h, hidden)
    _, _, normed, _, ctx2, scores, _ = _attend(h2, b, s, plan, key_mask, num_heads, norm, eps, attn_p, seed,
                                            return_scores, pre_norm=False)
    wo, bo, nwo, nbo = plan.params["output"]
    residual = normed["input"] if mode != "none" else h2
    out = tlin.grouped_forward(ctx2, wo, bo, nwo, nbo, norm, 1, eps, 1, residual, hidden_p, seed, stream=1)
    return out.view(b, s, plan.width), scores


def bottleneck_attention_backward(dout, dscores, h, key_mask, weights, num_heads, mode, norm, eps, attn_p,
                                  hidden_p, seed):
    """(dh, the gradients of the 18 weight arguments in order, None where unused)."""
    b, s, hidden = h.shape
    plan = _Plan(weights, mode)
    n = plan.width
    h2 = tlin.rows_of(h, hidden)
    y1, y2, normed, (q, k, v), ctx32, _, stats = _attend(h2, b, s, plan, key_mask, num_heads, norm, eps, attn_p,
                                                         seed, False, pre_norm=True)
    ctx2 = ctx32.to(h.dtype)
    grads = {}
    wo, bo, nwo, nbo = plan.params["output"]
    residual = normed["input"] if mode != "none" else h2
    dctx, *grads["output"], dres = tlin.linear_norm_backward(dout, ctx2, wo, bo, nwo, nbo, residual, norm, eps,
                                                             hidden_p, seed, stream=1)
    dy1 = torch.empty_like(y1)
    dy2 = torch.empty_like(y2) if y2 is not None else None
    dqkv = tuple(_heads(plan.seg(dy1, dy2, name), b, s, num_heads) for name in ("query", "key", "value"))
    tattn.attention_backward(_heads(dctx.view(-1, n), b, s, num_heads), dscores, q, k, v, key_mask, attn_p, seed,
                             out=dqkv, saved=(_heads(ctx32, b, s, num_heads), *stats))
    dpost = {"input": dres} if mode != "none" else {}
    if plan.second:
        src = normed[plan.source]
        w2 = _cat(plan.params, plan.second, 0)
        dsrc = gemm.matmul(dy2, w2, src.dtype)
        dsrc = dsrc + dpost[plan.source] if plan.source in dpost else dsrc
        dpost[plan.source] = dsrc
        dw2, db2 = gemm.weight_grad(dy2, src, w2.dtype, True)
        for j, name in enumerate(plan.second):
            grads[name] = (dw2[j * n:(j + 1) * n].clone(), db2[j * n:(j + 1) * n].clone(), None, None)
    norm_grads = {}
    for name in plan.normed:
        seg = plan.seg(y1, None, name)
        dz, dnw, dnb = tnorm.norm_backward(dpost[name], seg.contiguous(), plan.params[name][2], None,
                                           norm == "layernorm", eps)
        plan.seg(dy1, None, name).copy_(dz)
        norm_grads[name] = (dnw, dnb)
    w1 = _cat(plan.params, plan.first, 0)
    dh = gemm.matmul(dy1, w1, h.dtype, add=dres.reshape(-1, hidden) if mode == "none" else None)
    dw1, db1 = gemm.weight_grad(dy1, h2, w1.dtype, True)
    for j, name in enumerate(plan.first):
        grads[name] = (dw1[j * n:(j + 1) * n].clone(), db1[j * n:(j + 1) * n].clone(), *norm_grads.get(name, (None, None)))
    flat = [None] * 18
    for name, got in grads.items():
        for slot, g in zip(SLOTS[name], got):
            if slot is not None:
                flat[slot] = g
    return dh.view(h.shape), flat
