"""bottleneck_attention: the attention half of a MobileBERT block as one op.

`b = N(h Wiᵀ)`; `s = N(h Waᵀ)`; Q, K from `s`, V from `h` (mode "shared", MobileBERT); or Q, K, V
from `b` ("bottleneck", -tiny), from `h` with a bottleneck residual ("full", the IB-BERT teacher),
or from `h` with no bottleneck ("none", a BERT layer). `out = N(dropout(ctx Woᵀ + bo) + residual)`.
Returns (out, pre-softmax masked scores or an empty tensor).

On CPU in float32 the forward runs `_C.bottleneck_attention_forward`, one core call
(csrc/core/ops/bottleneck_attention.h): one packed GEMM over h for the projections that read it
(e.g. [Wi; Wa; Wv], one cached packing, `_packed.py`), the per-segment norms, the GEMM over the
bottleneck, the torch-free attention core with no B×H×S×S buffer unless scores are asked for, and the
output projection with residual and norm fused; attention and hidden dropout from the seed's
counter-based masks (streams 0 and 1, as the reference's and Triton's). When a gradient is wanted the
forward is composed from `_C.gemm`, `_C.norm_forward`, `_C.attention_forward` and `_C.dropout_rows`
instead and keeps its intermediates (the projections before and after their norms, the bottleneck
GEMM's output, the context and the output norm's input), so the backward runs no forward GEMM again;
without them the backward recomputes them the same way. The backward: the norm backwards with their
column sums in `_C`, the flash-style `_C.attention_backward` writing dQ, dK, dV straight into the
projection GEMMs' layout (a gradient on the returned scores included), the gradient GEMMs on torch
(one per stacked GEMM for the input gradients). Dropout without a seed and other dtypes run the
reference. On CUDA, or under `use_backend("triton")`, both directions run
`mbkernels/triton/bottleneck_attention.py` (widths up to 8192, head sizes 16–256).
"""

from __future__ import annotations

import torch

from mbkernels import backend
from mbkernels.ops import _cpu, _packed, reference
from mbkernels.ops._registry import Kernel, OpDef, define

MODES = ("shared", "bottleneck", "full", "none")

# The layer's attention weights, in the op's argument order: the one Python spelling of that list
# (the encoder's flat weights and the modules' `encoder_weights` follow it).
WEIGHTS = ("input_weight", "input_bias", "input_norm_weight", "input_norm_bias",
           "attention_weight", "attention_bias", "attention_norm_weight", "attention_norm_bias",
           "query_weight", "query_bias", "key_weight", "key_bias", "value_weight", "value_bias",
           "output_weight", "output_bias", "output_norm_weight", "output_norm_bias")
WEIGHT_INDEX = {name: i for i, name in enumerate(WEIGHTS)}


def _fake(h, key_mask, *rest):
    weights, (num_heads, *_, return_scores) = _split_args(rest)
    b, s, _ = h.shape
    scores = h.new_empty((b, num_heads, s, s)) if return_scores else h.new_empty(0)
    return h.new_empty((b, s, weights[WEIGHT_INDEX["output_weight"]].shape[0])), scores


def _split_args(rest):
    return rest[:len(WEIGHTS)], rest[len(WEIGHTS):]

# The projections side by side in the GEMM over h (A) and over the bottleneck (B), one segment of
# `width` columns each: csrc/core/ops/bottleneck_attention.h's projection_layout. "input" is b and
# "attention" is s, normalized in place; B reads s (mode shared) or b (mode bottleneck).
_LAYOUT = {"shared": (("input", "attention", "value"), ("query", "key")),
           "bottleneck": (("input",), ("query", "key", "value")),
           "full": (("input", "query", "key", "value"), ()),
           "none": (("query", "key", "value"), ())}


def _normalized(mode: str) -> tuple[str, ...]:
    """A's normalized segments (its first ones): b, and s in mode shared."""
    return {"shared": ("input", "attention"), "none": ()}.get(mode, ("input",))


def _supports_cpu(h, key_mask, *rest):
    weights, (num_heads, mode, norm, eps, attn_p, hidden_p, seed, return_scores) = _split_args(rest)
    # Dropout without a seed is torch's RNG dropout: only the reference has it.
    return _cpu.float32(h, *weights) and not ((attn_p > 0 or hidden_p > 0) and seed is None)


def _linear(weights, name):
    return weights[WEIGHT_INDEX[name + "_weight"]], weights[WEIGHT_INDEX[name + "_bias"]]


def packings(weights, mode):
    """The packed GEMMs over h, over the bottleneck (None without one) and of the output projection."""
    over_h, over_b = _LAYOUT[mode]
    return (_packed.packed([_linear(weights, p) for p in over_h]),
            _packed.packed([_linear(weights, p) for p in over_b]) if over_b else None,
            _cpu.packed(*_linear(weights, "output")))


def _width(weights) -> int:
    return weights[WEIGHT_INDEX["output_weight"]].shape[0]


def _cpu_forward(h, key_mask, *rest, save):
    weights, (num_heads, mode, norm, eps, attn_p, hidden_p, seed, return_scores) = _split_args(rest)
    batch, seq, hidden = h.shape
    width = _width(weights)
    scores = h.new_empty((batch, num_heads, seq, seq) if return_scores else (0,))
    if save:
        if batch * seq == 0 or width == 0:
            return h.new_empty((batch, seq, width)), scores, _saved_fake(h, key_mask, *rest)
        *saved, _ = _intermediates(h, key_mask, weights, num_heads, mode, norm, eps, attn_p, hidden_p, seed,
                                   scores if return_scores else None)
        out = _cpu.norm_forward(norm, saved[4], weights[WEIGHT_INDEX["output_norm_weight"]],
                                weights[WEIGHT_INDEX["output_norm_bias"]], eps)
        if mode == "none":
            saved[0] = h.new_empty(0)  # a_pre is a: outputs of a custom op may not alias
        if saved[2] is None:
            saved[2] = h.new_empty(0)
        return out.view(batch, seq, width), scores, saved
    # Inference: the single fused core call.
    hv, ldh = _cpu.rows(h, hidden)
    out = h.new_empty((batch, seq, width))
    over_h, over_b, output, norms, _ = prepared(weights, mode)
    mask = _cpu.key_mask_bytes(key_mask)
    backend._C.bottleneck_attention_forward(
        hv.data_ptr(), ldh, batch, seq, _cpu.ptr(mask), over_h, over_b, output, mode, norm, eps, num_heads,
        *norms, attn_p, hidden_p, _cpu.seed_of(seed), out.data_ptr(),
        scores.data_ptr() if return_scores else 0, _cpu.threads())
    return out, scores, []


_NORMS = ("input_norm_weight", "input_norm_bias", "attention_norm_weight", "attention_norm_bias",
          "output_norm_weight", "output_norm_bias")


def prepared(weights, mode):
    """The fused core's weight arguments (`_C.bottleneck_attention_forward`, the encoder's layers):
    the packed GEMMs over h, over the bottleneck and of the output projection, the six norm parameters'
    pointers (0 for an absent one; the core reads those its mode uses), and the contiguous copies they
    may point into. Built once per weight set (`_packed.prepared`)."""
    def build():
        held: list[torch.Tensor] = []
        return (*packings(weights, mode), [_cpu.held_ptr(weights[WEIGHT_INDEX[n]], held) for n in _NORMS], held)
    return _packed.prepared(("bottleneck_attention", mode), weights, build)


def _saved_fake(h, key_mask, *rest):
    """Shapes of what the forward keeps when saving: a_pre (empty in mode none, where it is a), a, the
    bottleneck GEMM's output (empty without one), the context and the output norm's input."""
    weights, (num_heads, mode, *_) = _split_args(rest)
    rows, width = h.shape[0] * h.shape[1], _width(weights)
    na, nb = (len(names) * width for names in _LAYOUT[mode])
    return [h.new_empty((rows, na) if mode != "none" else (0,)), h.new_empty((rows, na)),
            h.new_empty((rows, nb) if nb else (0,)), h.new_empty((rows, width)), h.new_empty((rows, width))]


def _projections(mode, a, bmat, width, seq, head_dim):
    """Q, K and V in A [rows, na] and B [rows, nb] as (data pointer, (batch, head, row) strides)."""
    over_h, over_b = _LAYOUT[mode]
    result = []
    for p in ("query", "key", "value"):
        t, i = (a, over_h.index(p)) if p in over_h else (bmat, over_b.index(p))
        ld = t.shape[1]
        result.append((t[:, i * width:(i + 1) * width].data_ptr(), (seq * ld, head_dim, ld)))
    return result


def _intermediates(h, key_mask, weights, num_heads, mode, norm, eps, attn_p, hidden_p, seed, scores=None):
    """The forward up to the output norm, keeping [a_pre, a, bmat (None without a GEMM over the
    bottleneck), ctx, t_out] and h as rows: a_pre = h [W_A]ᵀ + biases [rows, na]; a = a_pre with its
    normalized segments normalized (a_pre itself in mode none); bmat [rows, nb] the GEMM over the
    bottleneck; ctx the attention context [rows, width] ([B, S, H·D]); t_out = dropout(ctx Woᵀ + bo)
    + residual, the output norm's input. The scores go to `scores` when given. rows and width > 0."""
    batch, seq, hidden = h.shape
    rows, width = batch * seq, _width(weights)
    over_h_names, over_b_names = _LAYOUT[mode]
    na, nb = len(over_h_names) * width, len(over_b_names) * width
    over_h, over_b, output = packings(weights, mode)
    hv, ldh = _cpu.rows(h, hidden)
    a_pre = _cpu.gemm(hv, ldh, over_h, h.new_empty((rows, na)))
    a = a_pre
    if mode != "none":
        a = a_pre.clone()
        for i, p in enumerate(_normalized(mode)):
            cols = slice(i * width, (i + 1) * width)
            a[:, cols] = _cpu.norm_forward(norm, a_pre[:, cols].contiguous(), weights[WEIGHT_INDEX[p + "_norm_weight"]],
                                           weights[WEIGHT_INDEX[p + "_norm_bias"]], eps)
    bmat = None
    if nb:
        src = a[:, width:] if mode == "shared" else a  # s or b
        bmat = _cpu.gemm(src, na, over_b, h.new_empty((rows, nb)))
    head_dim = width // num_heads
    mask = _cpu.key_mask_bytes(key_mask)
    (q, qs), (k, ks), (v, vs) = _projections(mode, a, bmat, width, seq, head_dim)
    ctx = h.new_empty((rows, width))
    backend._C.attention_forward(q, qs, k, ks, v, vs, batch, num_heads, seq, seq, head_dim, _cpu.ptr(mask), attn_p,
                                 _cpu.seed_of(seed), ctx.data_ptr(), (seq * width, head_dim, width),
                                 _cpu.ptr(scores), _cpu.threads())
    residual, ld_residual = (a, na) if mode != "none" else (hv, ldh)
    t_out = h.new_empty((rows, width))
    if hidden_p > 0:
        # Hidden dropout sits between the GEMM and the residual.
        _cpu.gemm(ctx, width, output, t_out)
        backend._C.dropout_rows(t_out.data_ptr(), width, rows, width, hidden_p, _cpu.seed_of(seed), _HIDDEN_STREAM,
                                residual.data_ptr(), ld_residual, _cpu.threads())
    else:
        _cpu.gemm(ctx, width, output, t_out, residual=residual, ld_residual=ld_residual)
    return a_pre, a, bmat, ctx, t_out, hv


# The dropout streams of mbkernels/ops/dropout.py (the reference's and Triton's): attention 0, hidden 1.
_HIDDEN_STREAM = 1


def _cpu_backward(grads, needs_grad, saved, h, key_mask, *rest):
    """Gradients of (h, key_mask, the 18 weights, seed) from what the forward saved, or from the
    forward recomputed when `saved` is empty."""
    weights, (num_heads, mode, norm, eps, attn_p, hidden_p, seed, return_scores) = _split_args(rest)
    batch, seq, hidden = h.shape
    rows, width = batch * seq, _width(weights)

    def need(name):
        return needs_grad[2 + WEIGHT_INDEX[name]] and weights[WEIGHT_INDEX[name]] is not None

    if rows == 0 or width == 0:
        return [torch.zeros_like(h) if needs_grad[0] else None, None,
                *(torch.zeros_like(w) if need(n) else None for n, w in zip(WEIGHTS, weights)), None]
    over_h_names, over_b_names = _LAYOUT[mode]
    na, nb = len(over_h_names) * width, len(over_b_names) * width
    if saved:
        a_pre, a, bmat, ctx, t_out = saved
        hv = _cpu.rows(h, hidden)[0]
        a_pre = a if mode == "none" else a_pre
        bmat = bmat if nb else None
    else:
        a_pre, a, bmat, ctx, t_out, hv = _intermediates(h, key_mask, weights, num_heads, mode, norm, eps, attn_p,
                                                        hidden_p, seed)
    gw: list[torch.Tensor | None] = [None] * len(WEIGHTS)
    # Only the scores used: autograd hands an empty gradient for the output.
    g = grads[0].reshape(rows, width).contiguous() if grads[0].numel() else h.new_zeros((rows, width))
    dscores = grads[1].contiguous() if return_scores and grads[1].numel() else None

    # out = N(t_out), t_out = dropout(ctx Woᵀ + bo) + residual.
    gt, gw[WEIGHT_INDEX["output_norm_weight"]], gw[WEIGHT_INDEX["output_norm_bias"]], g_bo = _cpu.norm_backward(
        norm, g, t_out, weights[WEIGHT_INDEX["output_norm_weight"]], eps)
    gy = gt
    if hidden_p > 0:
        gy = gt.clone()
        backend._C.dropout_rows(gy.data_ptr(), width, rows, width, hidden_p, _cpu.seed_of(seed), _HIDDEN_STREAM, 0,
                                0, _cpu.threads())
        g_bo = gy.sum(0)
    wo = weights[WEIGHT_INDEX["output_weight"]]
    if need("output_bias"):
        gw[WEIGHT_INDEX["output_bias"]] = g_bo
    if need("output_weight"):
        gw[WEIGHT_INDEX["output_weight"]] = torch.mm(gy.t(), ctx)
    gctx = torch.mm(gy, wo)

    # Attention: dQ, dK, dV land in ga / gb at the projections' places.
    ga = h.new_empty((rows, na))
    gb = h.new_empty((rows, nb)) if nb else None
    head_dim = width // num_heads
    mask = _cpu.key_mask_bytes(key_mask)
    (q, qs), (k, ks), (v, vs) = _projections(mode, a, bmat, width, seq, head_dim)
    (dq, dqs), (dk, dks), (dv, dvs) = _projections(mode, ga, gb, width, seq, head_dim)
    backend._C.attention_backward(q, qs, k, ks, v, vs, batch, num_heads, seq, seq, head_dim, _cpu.ptr(mask), attn_p,
                                  _cpu.seed_of(seed), gctx.data_ptr(), (seq * width, head_dim, width),
                                  _cpu.ptr(dscores), dq, dqs, dk, dks, dv, dvs, _cpu.threads())

    def segment(t, i):
        return t[:, i * width:(i + 1) * width]

    def linear_grads(g, names, x):
        """Weight and bias gradients of a stacked GEMM's projections over input x: one GEMM for the
        stacked weights (a wider product runs nearer the machine's peak than one per weight), split
        into separate tensors. A normalized segment's bias gradient came from its norm's backward."""
        stacked = torch.mm(g.t(), x) if any(need(p + "_weight") for p in names) else None
        for i, p in enumerate(names):
            if need(p + "_weight"):
                gw[WEIGHT_INDEX[p + "_weight"]] = stacked if len(names) == 1 else stacked[i * width:(i + 1) * width].clone()
            if need(p + "_bias") and gw[WEIGHT_INDEX[p + "_bias"]] is None:
                gw[WEIGHT_INDEX[p + "_bias"]] = segment(g, i).sum(0)

    def stacked_weights(names):
        ws = [weights[WEIGHT_INDEX[p + "_weight"]] for p in names]
        return ws[0] if len(ws) == 1 else torch.cat(ws)

    # The GEMM over the bottleneck (its input: s in mode shared, b in mode bottleneck).
    g_src = None
    if nb:
        linear_grads(gb, over_b_names, segment(a, 1 if mode == "shared" else 0))
        g_src = torch.mm(gb, stacked_weights(over_b_names))
    # The normalized segments of A: their norm's backward gives the pre-norm gradient in place.
    for i, p in enumerate(_normalized(mode)):
        if i == 0:  # b, the residual (and in mode bottleneck the input of Q, K, V)
            g_norm = gt + g_src if mode == "bottleneck" else gt
        else:  # s feeds Q and K
            g_norm = g_src.contiguous()
        g_pre, gnw, gnb, gbias = _cpu.norm_backward(norm, g_norm, segment(a_pre, i).contiguous(),
                                                    weights[WEIGHT_INDEX[p + "_norm_weight"]], eps)
        segment(ga, i).copy_(g_pre)
        gw[WEIGHT_INDEX[p + "_norm_weight"]], gw[WEIGHT_INDEX[p + "_norm_bias"]] = gnw, gnb
        if need(p + "_bias"):
            gw[WEIGHT_INDEX[p + "_bias"]] = gbias
    linear_grads(ga, over_h_names, hv)
    gh = None
    if needs_grad[0]:
        gh = torch.mm(ga, stacked_weights(over_h_names))
        if mode == "none":
            gh.add_(gt)  # the residual is h
        gh = gh.view(h.shape)
    return [gh, None, *gw, None]


def _triton_bottleneck_attention(h, weights, num_heads, mode, norm):
    """The Triton bottleneck_attention module when it runs these inputs, else None."""
    from mbkernels import triton as mbt
    if not mbt.available():
        return None
    from mbkernels.triton import bottleneck_attention as tk
    return tk if tk.supported(h, weights, num_heads, mode, norm) else None


def _triton_supports(h, key_mask, *rest):
    weights, (num_heads, mode, norm, *_) = _split_args(rest)
    return _triton_bottleneck_attention(h, weights, num_heads, mode, norm) is not None


def _triton_forward(h, key_mask, *rest, save):
    weights, (num_heads, mode, norm, eps, attn_p, hidden_p, seed, return_scores) = _split_args(rest)
    tk = _triton_bottleneck_attention(h, weights, num_heads, mode, norm)
    return (*tk.bottleneck_attention_forward(h, key_mask, weights, num_heads, mode, norm, eps, attn_p, hidden_p,
                                             seed, return_scores), [])


def _triton_backward(grads, needs_grad, saved, h, key_mask, *rest):
    weights, (num_heads, mode, norm, eps, attn_p, hidden_p, seed, return_scores) = _split_args(rest)
    tk = _triton_bottleneck_attention(h, weights, num_heads, mode, norm)
    dscores = grads[1] if return_scores and grads[1].numel() else None
    dh, dweights = tk.bottleneck_attention_backward(grads[0], dscores, h, key_mask, weights, num_heads, mode,
                                                    norm, eps, attn_p, hidden_p, seed)
    return [dh, None, *dweights, None]


BOTTLENECK_ATTENTION = define(OpDef(
    name="bottleneck_attention",
    args=("Tensor h, Tensor? key_mask, "
          + ", ".join(f"Tensor? {w}" for w in WEIGHTS)
          + ", int num_heads, str mode, str norm, float eps, float attn_dropout_p, "
            "float hidden_dropout_p, Tensor? seed, bool return_scores"),
    outputs=2,
    reference=reference.bottleneck_attention,
    fake=_fake,
    kernels=(Kernel("cpu", _supports_cpu, _cpu_forward, _cpu_backward, _saved_fake),
             Kernel("triton", _triton_supports, _triton_forward, _triton_backward)),
))


def bottleneck_attention(h: torch.Tensor, key_mask: torch.Tensor | None,
                         input_weight, input_bias, input_norm_weight, input_norm_bias,
                         attention_weight, attention_bias, attention_norm_weight, attention_norm_bias,
                         query_weight, query_bias, key_weight, key_bias, value_weight, value_bias,
                         output_weight, output_bias, output_norm_weight, output_norm_bias,
                         num_heads: int, mode: str = "shared", norm: str = "nonorm", eps: float = 1e-12,
                         attn_dropout_p: float = 0.0, hidden_dropout_p: float = 0.0,
                         return_scores: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """See the module docstring; weights of projections the mode does not use may be None."""
    if mode not in MODES:
        raise ValueError(f"bottleneck_attention: mode expected one of {MODES}, got {mode!r}")
    return BOTTLENECK_ATTENTION(h, key_mask, input_weight, input_bias, input_norm_weight, input_norm_bias,
                                attention_weight, attention_bias, attention_norm_weight, attention_norm_bias,
                                query_weight, query_bias, key_weight, key_bias, value_weight, value_bias,
                                output_weight, output_bias, output_norm_weight, output_norm_bias,
                                num_heads, mode, norm, eps, attn_dropout_p, hidden_dropout_p, None, return_scores)
