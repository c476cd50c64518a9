"""ffn_stack: MobileBERT's stacked FFNs as one op. For each i:
`x = N_i(act(x W1ᵢᵀ + b1ᵢ) W2ᵢᵀ + b2ᵢ + x)`, one eps per FFN (HF: `layer_norm_eps` for the first
ones, 1e-5 for the last), dropout on the last FFN's output. On CPU the fp32 forward without
dropout runs `mbkernels_cpu::ffn_stack_forward` (each thread pushes its row tiles through all the
FFNs with the intermediate in cache; weights packed once and cached) and its backward
`mbkernels_cpu::ffn_stack_backward` (the forward recomputed on the packed GEMM; norm and
activation backward with the bias column sums fused in C++; the gradient GEMMs on ATen).
In training (ReLU, one intermediate width) `ffn_stack` calls `mbkernels::ffn_stack_train`
instead: the same forward keeping each FFN's input, activations and pre-norm sum (what autograd
would keep), so the backward runs no forward GEMM again. Other dtypes and dropout run the
reference inside the custom op. On CUDA, or under `use_backend("triton")`, both directions run
`mbkernels/triton/ffn_stack.py` (widths up to 8192, fused up to 256; the backward recomputes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mbkernels import backend
from mbkernels.ops import reference
from mbkernels.ops._registry import OpDef, _tensors, define, define_saving, no_grad_placeholder, saving_applies
from mbkernels.ops.dropout import new_seed


def _ffn_stack_cpu(x, w1, b1, w2, b2, nw, nb, act, norm, eps, dropout_p, seed):
    # The C++ kernel is the fp32 path without dropout; the reference runs the rest (x and the first
    # weight decide, as in linear_norm: mixed dtypes are an error the C++ op names).
    if dropout_p > 0 or x.dtype != torch.float32 or (w1 and w1[0].dtype != torch.float32):
        return NotImplemented
    return torch.ops.mbkernels_cpu.ffn_stack_forward(x, w1, b1, w2, b2, nw, nb, act, norm, eps)


def _triton_ffn_stack(x, w1, act, norm):
    """The Triton ffn_stack module when it runs these inputs, else None (the reference runs)."""
    from mbkernels import triton as mbt
    if not mbt.available():
        return None
    from mbkernels.triton import ffn_stack as tk
    return tk if tk.supported(x, w1, act, norm) else None


def _ffn_stack_triton(x, w1, b1, w2, b2, nw, nb, act, norm, eps, dropout_p, seed):
    tk = _triton_ffn_stack(x, w1, act, norm)
    if tk is None:
        return NotImplemented
    return tk.ffn_stack_forward(x, w1, b1, w2, b2, nw, nb, act, norm, eps, dropout_p, seed)


def _ffn_stack_triton_backward(grads, needs_grad, x, w1, b1, w2, b2, nw, nb, act, norm, eps, dropout_p, seed):
    tk = _triton_ffn_stack(x, w1, act, norm)
    if tk is None:
        return NotImplemented
    dx, *lists = tk.ffn_stack_backward(grads[0], x, w1, b1, w2, b2, nw, nb, act, norm, eps, dropout_p, seed)
    got = [dx, *(g for lst in lists for g in lst), None]
    flat = _tensors((x, w1, b1, w2, b2, nw, nb, seed))
    # A fresh placeholder per slot: custom-op outputs may not alias each other.
    return [g if need and g is not None else no_grad_placeholder(flat) for g, need in zip(got, needs_grad)]


def _ffn_stack_cpu_backward(grads, needs_grad, x, w1, b1, w2, b2, nw, nb, act, norm, eps, dropout_p, seed):
    if dropout_p > 0 or x.dtype != torch.float32 or (w1 and w1[0].dtype != torch.float32):
        return NotImplemented
    return _train_cpu_backward(grads, needs_grad, [], x, w1, b1, w2, b2, nw, nb, act, norm, eps, dropout_p, seed)


def _fake(x, *rest):
    return x.new_empty(x.shape)


def _train_cpu(x, w1, b1, w2, b2, nw, nb, act, norm, eps, dropout_p, seed):
    y, *saved = torch.ops.mbkernels_cpu.ffn_stack_forward_train(x, w1, b1, w2, b2, nw, nb, act, norm, eps)
    return y, saved


def _train_saved_fake(x, w1, *rest):
    rows, width, n = x.numel() // x.shape[-1], x.shape[-1], len(w1)
    return [x.new_empty((n - 1, rows, width)), x.new_empty((n, rows, w1[0].shape[0])),
            x.new_empty((n, rows, width))]


def _train_cpu_backward(grads, needs_grad, saved, x, w1, b1, w2, b2, nw, nb, act, norm, eps, dropout_p, seed):
    """The C++ backward; `saved` is what `_train_cpu` kept, or empty (it recomputes the forward)."""
    got = torch.ops.mbkernels_cpu.ffn_stack_backward(grads[0], x, w1, b1, w2, b2, nw, nb, act, norm, eps,
                                                     needs_grad[:-1], saved)
    return [*got, no_grad_placeholder([x])]  # seed: no gradient


FFN_STACK = define(OpDef(
    name="ffn_stack",
    args=("Tensor x, Tensor[] intermediate_weights, Tensor[] intermediate_biases, Tensor[] output_weights, "
          "Tensor[] output_biases, Tensor[] norm_weights, Tensor[] norm_biases, str act, str norm, "
          "float[] eps, float dropout_p, Tensor? seed"),
    returns="Tensor",
    reference_forward=reference.ffn_stack,
    fake=_fake,
    cpu=_ffn_stack_cpu,
    cpu_backward=_ffn_stack_cpu_backward,
    triton=_ffn_stack_triton,
    triton_backward=_ffn_stack_triton_backward,
))
define_saving(FFN_STACK, _train_cpu, _train_saved_fake, _train_cpu_backward)


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
    args = [list(intermediate_weights), list(intermediate_biases), list(output_weights),
            list(output_biases), list(norm_weights), list(norm_biases)]
    if backend.current_backend() == "reference":
        return reference.ffn_stack(x, *args, act, norm, eps, dropout_p, None)
    seed = new_seed() if dropout_p > 0 else None
    # Training keeps the intermediates (ReLU: relu' reads off the kept activations; one width).
    if (dropout_p == 0 and act == "relu" and len({w.shape[0] for w in intermediate_weights}) == 1
            and saving_applies([x, *(t for a in args for t in a)])):
        return torch.ops.mbkernels.ffn_stack_train(x, *args, act, norm, eps, dropout_p, seed)[0]
    return torch.ops.mbkernels.ffn_stack(x, *args, act, norm, eps, dropout_p, seed)
