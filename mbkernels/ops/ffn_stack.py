"""ffn_stack: MobileBERT's stacked FFNs as one op. For each i:
`x = N_i(act(x W1ᵢᵀ + b1ᵢ) W2ᵢᵀ + b2ᵢ + x)`, one eps per FFN (HF: `layer_norm_eps` for the first
ones, 1e-5 for the last), dropout on the last FFN's output.

On CPU in float32 without dropout the forward runs `_C.ffn_stack_forward` (each thread pushes its
row tiles through all the FFNs with the intermediate in cache; weights packed once). When a gradient
is wanted (ReLU, one intermediate width) it also keeps each FFN's input, activations and pre-norm
sum — what autograd would keep — so the backward runs no forward GEMM again; otherwise the backward
recomputes them on the packed GEMM. The backward: per FFN the norm's and the activation's backward
with the bias column sums in `_C`, the gradient GEMMs on torch. Other dtypes and dropout run the
reference. On CUDA, or under `use_backend("triton")`, both directions run
`mbkernels/triton/ffn_stack.py` (widths up to 8192, fused up to 256; the backward recomputes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mbkernels import backend
from mbkernels.ops import _cpu, _packed, reference
from mbkernels.ops._registry import Kernel, OpDef, define


def _supports_cpu(x, w1, b1, w2, b2, nw, nb, act, norm, eps, dropout_p, seed):
    return dropout_p == 0 and _cpu.float32(x, w1[0])


def _saves(act, w1) -> bool:
    """Whether the forward keeps the intermediates: ReLU (relu' reads off the kept activations) and
    one intermediate width (the saved activations are one [n, rows, width] tensor)."""
    return act == "relu" and all(w.shape[0] == w1[0].shape[0] for w in w1)  # (SymInts: no set)


def _saved_fake(x, w1, *rest):
    act = rest[5]
    if not _saves(act, w1):
        return []
    rows, width, n = x.numel() // x.shape[-1], x.shape[-1], len(w1)
    return [x.new_empty((n - 1, rows, width)), x.new_empty((n, rows, w1[0].shape[0])),
            x.new_empty((n, rows, width))]


def _cpu_forward(x, w1, b1, w2, b2, nw, nb, act, norm, eps, dropout_p, seed, *, save):
    width = x.shape[-1]
    xv, ldx = _cpu.rows(x, width)
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    saved = _saved_fake(x, w1, b1, w2, b2, nw, nb, act) if save else []
    sx, sh, st = saved if saved else (None, None, None)
    inter, out, nw_ptrs, nb_ptrs, _ = prepared(w1, b1, w2, b2, nw, nb)
    backend._C.ffn_stack_forward(
        xv.data_ptr(), ldx, xv.shape[0], inter, out, nw_ptrs, nb_ptrs,
        eps, act, norm, y.data_ptr(), width, _cpu.ptr(sx), _cpu.ptr(sh), _cpu.ptr(st), _cpu.threads())
    return y, saved


def prepared(w1, b1, w2, b2, nw, nb):
    """`_C.ffn_stack_forward`'s weight arguments (the encoder's layers too): the packed GEMMs, the norm
    parameters' pointers, and the contiguous copies those may point into. Built once per weight set
    (`_packed.prepared`)."""
    def build():
        held: list[torch.Tensor] = []
        return ([_cpu.packed(w, b) for w, b in zip(w1, b1)], [_cpu.packed(w, b) for w, b in zip(w2, b2)],
                [_cpu.held_ptr(t, held) for t in nw], [_cpu.held_ptr(t, held) for t in nb], held)
    return _packed.prepared(("ffn_stack",), [*w1, *b1, *w2, *b2, *nw, *nb], build)


def _recompute(x, w1, b1, w2, b2, nw, nb, act, norm, eps):
    """The forward again, keeping each FFN's input xs[i], activations hs[i] (ReLU; else None) and
    pre-norm sum ts[i]."""
    n, width = len(w1), x.shape[-1]
    xs = [x.reshape(-1, width).contiguous()]
    rows, keep_h = xs[0].shape[0], _saves(act, w1)
    hs, ts = [], []
    for i in range(n):
        h = _cpu.gemm(xs[i], width, _cpu.packed(w1[i], b1[i]), x.new_empty((rows, w1[i].shape[0])), act)
        t = _cpu.gemm(h, h.shape[1], _cpu.packed(w2[i], b2[i]), x.new_empty((rows, width)),
                      residual=xs[i], ld_residual=width)
        hs.append(h if keep_h else None)
        ts.append(t)
        if i + 1 < n:
            xs.append(_cpu.norm_forward(norm, t, nw[i], nb[i], eps[i]))
    return xs, hs, ts


def _cpu_backward(grads, needs_grad, saved, x, w1, b1, w2, b2, nw, nb, act, norm, eps, dropout_p, seed):
    n, width = len(w1), x.shape[-1]
    if saved:
        sx, sh, st = saved
        xs = [x.reshape(-1, width), *sx.unbind(0)]
        hs, ts = list(sh.unbind(0)), list(st.unbind(0))
    else:
        xs, hs, ts = _recompute(x, w1, b1, w2, b2, nw, nb, act, norm, eps)
    rows = xs[0].shape[0]
    gw1, gb1, gw2, gb2, gnw, gnb = ([None] * n for _ in range(6))
    # Reverse: per FFN the norm's backward, then the intermediate u = x W1ᵀ + b1 (ReLU: the kept
    # activations, as relu'(u) is h > 0), the activation's backward (which turns u into act(u) for
    # W2's gradient) and the gradient GEMMs.
    g = grads[0].reshape(rows, width).contiguous()
    for i in reversed(range(n)):
        inter = w1[i].shape[0]
        gt, gnw[i], gnb[i], gb2[i] = _cpu.norm_backward(norm, g, ts[i], nw[i], eps[i])
        u = hs[i] if hs[i] is not None else _cpu.gemm(xs[i], width, _cpu.packed(w1[i], b1[i]),
                                                      x.new_empty((rows, inter)))
        gh = torch.mm(gt, w2[i])
        gu, gb1[i] = x.new_empty((rows, inter)), x.new_empty(inter)
        backend._C.activation_backward(act, u.data_ptr(), gh.data_ptr(), gu.data_ptr(), gb1[i].data_ptr(), rows,
                                       inter, _cpu.threads())
        if needs_grad[1 + 2 * n + i]:
            gw2[i] = torch.mm(gt.t(), u)
        if needs_grad[1 + i]:
            gw1[i] = torch.mm(gu.t(), xs[i])
        # The path through W1 plus the residual path, in autograd's order (a product, then the sum):
        # with few tokens the weight gradients of earlier FFNs amplify the rounding of this sum
        # (rows of W1's gradient cancel), and addmm's different rounding measured up to 7x further
        # from float64 than fp32 autograd is; the same order keeps them on a par.
        g = torch.mm(gu, w1[i]).add_(gt)
    return [g.view(x.shape), *gw1, *gb1, *gw2, *gb2, *gnw, *gnb, None]


def _triton_ffn_stack(x, w1, act, norm):
    """The Triton ffn_stack module when it runs these inputs, else None."""
    from mbkernels import triton as mbt
    if not mbt.available():
        return None
    from mbkernels.triton import ffn_stack as tk
    return tk if tk.supported(x, w1, act, norm) else None


def _triton_forward(x, w1, b1, w2, b2, nw, nb, act, norm, eps, dropout_p, seed, *, save):
    tk = _triton_ffn_stack(x, w1, act, norm)
    return tk.ffn_stack_forward(x, w1, b1, w2, b2, nw, nb, act, norm, eps, dropout_p, seed), []


def _triton_backward(grads, needs_grad, saved, x, w1, b1, w2, b2, nw, nb, act, norm, eps, dropout_p, seed):
    tk = _triton_ffn_stack(x, w1, act, norm)
    dx, *lists = tk.ffn_stack_backward(grads[0], x, w1, b1, w2, b2, nw, nb, act, norm, eps, dropout_p, seed)
    return [dx, *(g for lst in lists for g in lst), None]


def _fake(x, *rest):
    return x.new_empty(x.shape)


FFN_STACK = define(OpDef(
    name="ffn_stack",
    args=("Tensor x, Tensor[] intermediate_weights, Tensor[] intermediate_biases, Tensor[] output_weights, "
          "Tensor[] output_biases, Tensor[] norm_weights, Tensor[] norm_biases, str act, str norm, "
          "float[] eps, float dropout_p, Tensor? seed"),
    outputs=1,
    reference=reference.ffn_stack,
    fake=_fake,
    kernels=(Kernel("cpu", _supports_cpu, _cpu_forward, _cpu_backward, _saved_fake),
             Kernel("triton", lambda x, w1, b1, w2, b2, nw, nb, act, norm, *_: _triton_ffn_stack(x, w1, act, norm)
                    is not None, _triton_forward, _triton_backward)),
))


def ffn_stack(x: torch.Tensor, intermediate_weights: Sequence[torch.Tensor],
              intermediate_biases: Sequence[torch.Tensor], output_weights: Sequence[torch.Tensor],
              output_biases: Sequence[torch.Tensor], norm_weights: Sequence[torch.Tensor],
              norm_biases: Sequence[torch.Tensor], act: str = "relu", norm: str = "nonorm",
              eps: Sequence[float] | None = None, dropout_p: float = 0.0) -> torch.Tensor:
    """The stacked FFNs; every list has one entry per FFN (at least one)."""
    n = len(intermediate_weights)
    lists = {"intermediate_biases": intermediate_biases, "output_weights": output_weights,
             "output_biases": output_biases, "norm_weights": norm_weights, "norm_biases": norm_biases}
    if n == 0:
        raise ValueError("ffn_stack: intermediate_weights expected at least one FFN, got an empty list")
    for name, lst in lists.items():
        if len(lst) != n:
            raise ValueError(f"ffn_stack: {name} expected {n} entries (one per FFN), got {len(lst)}")
    eps = [1e-12] * n if eps is None else [float(e) for e in eps]
    if len(eps) != n:
        raise ValueError(f"ffn_stack: eps expected {n} entries (one per FFN), got {len(eps)}")
    return FFN_STACK(x, list(intermediate_weights), list(intermediate_biases), list(output_weights),
                     list(output_biases), list(norm_weights), list(norm_biases), act, norm, eps, dropout_p, None)
