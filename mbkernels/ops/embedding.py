"""embedding: lookup (or `inputs_embeds`) → trigram concat [next, cur, prev] → Linear → + position
+ token type → N → dropout. On CPU in fp32 the forward runs `mbkernels_cpu::embedding_forward`
(csrc/core/ops/embedding.h: the Linear on the packed GEMM with position + type and the norm in its
epilogue, dropout after it) and the backward `mbkernels_cpu::embedding_backward` (the norm's
backward and the lookups' scatter-adds in C++, the gradient GEMMs on ATen), from input_ids or
inputs_embeds, with or without the Linear. In training `embedding` calls
`mbkernels::embedding_train`, which keeps the pre-norm sum for the backward; the frozen op's
backward recomputes it on the same core. Other dtypes run the reference inside the custom op. On
CUDA, or under `use_backend("triton")`, both directions run `mbkernels/triton/embedding.py` (hidden
widths up to 512).
"""

from __future__ import annotations

import torch

from mbkernels import backend
from mbkernels.ops import reference
from mbkernels.ops._registry import OpDef, _tensors, define, define_saving, no_grad_placeholder, saving_applies
from mbkernels.ops.dropout import new_seed


def _fake(input_ids, inputs_embeds, token_type_ids, position_ids, word_embeddings, transformation_weight,
          transformation_bias, position_embeddings, *rest):
    b, s = token_type_ids.shape
    return word_embeddings.new_empty((b, s, position_embeddings.shape[1]))


def _float32(word_embeddings, inputs_embeds) -> bool:
    """Whether the C++ kernels take these inputs (the lookup's source is float32; the C++ ops name
    any other tensor of another dtype)."""
    return (inputs_embeds if inputs_embeds is not None else word_embeddings).dtype == torch.float32


def _embedding_cpu(input_ids, inputs_embeds, token_type_ids, position_ids, word_embeddings, transformation_weight,
                   transformation_bias, position_embeddings, token_type_embeddings, norm_weight, norm_bias,
                   padding_idx, trigram, norm, eps, dropout_p, seed):
    if not _float32(word_embeddings, inputs_embeds):
        return NotImplemented
    return torch.ops.mbkernels_cpu.embedding_forward(
        input_ids, inputs_embeds, token_type_ids, position_ids, word_embeddings, transformation_weight,
        transformation_bias, position_embeddings, token_type_embeddings, norm_weight, norm_bias, trigram, norm, eps,
        dropout_p, seed)


# The registry gives a None argument a gradient slot as it does a tensor: padding_idx=None (an int?)
# adds one after norm_bias. The kernels' backwards speak of the 12 tensor arguments only.
_PADDING_SLOT = 11


def _tensor_needs(needs_grad, padding_idx) -> list[bool]:
    if padding_idx is not None:
        return list(needs_grad)
    return [*needs_grad[:_PADDING_SLOT], *needs_grad[_PADDING_SLOT + 1:]]


def _slots(grads: list, padding_idx, args) -> list:
    """The 12 tensor arguments' gradients as the registry's slots."""
    if padding_idx is not None:
        return grads
    return [*grads[:_PADDING_SLOT], no_grad_placeholder(_tensors(args)), *grads[_PADDING_SLOT:]]


def _embedding_cpu_backward(grads, needs_grad, *args):
    if not _float32(args[4], args[1]):
        return NotImplemented
    return _train_cpu_backward(grads, needs_grad, [], *args)


def _train_cpu(input_ids, inputs_embeds, token_type_ids, position_ids, word_embeddings, transformation_weight,
               transformation_bias, position_embeddings, token_type_embeddings, norm_weight, norm_bias,
               padding_idx, trigram, norm, eps, dropout_p, seed):
    out, pre_norm = torch.ops.mbkernels_cpu.embedding_forward_train(
        input_ids, inputs_embeds, token_type_ids, position_ids, word_embeddings, transformation_weight,
        transformation_bias, position_embeddings, token_type_embeddings, norm_weight, norm_bias, trigram, norm, eps,
        dropout_p, seed)
    return out, [pre_norm]


def _train_saved_fake(*args):
    out = _fake(*args)
    return [out.new_empty((out.shape[0] * out.shape[1], out.shape[2]))]


def _train_cpu_backward(grads, needs_grad, saved, *args):
    """The C++ backward; `saved` is the pre-norm sum `_train_cpu` kept, or empty (it is recomputed)."""
    padding_idx = args[_PADDING_SLOT]
    got = torch.ops.mbkernels_cpu.embedding_backward(grads[0], *args, _tensor_needs(needs_grad, padding_idx), saved)
    return _slots(got, padding_idx, args)


def _triton_embedding(args):
    """The Triton embedding module when it runs these inputs, else None (the reference runs)."""
    from mbkernels import triton as mbt
    if not mbt.available():
        return None
    from mbkernels.triton import embedding as tk
    _, embeds, _, _, table, wt, _, pe, _, _, _, _, trigram, norm = args[:14]
    return tk if tk.supported(embeds, table, wt, pe, norm, trigram) else None


def _embedding_triton(*args):
    tk = _triton_embedding(args)
    return tk.embedding_forward(*args) if tk is not None else NotImplemented


def _embedding_triton_backward(grads, needs_grad, *args):
    tk = _triton_embedding(args)
    if tk is None:
        return NotImplemented
    dembeds, dtable, dwt, dbt, dpe, dte, dnw, dnb = tk.embedding_backward(grads[0], *args)
    got = (None, dembeds, None, None, dtable, dwt, dbt, dpe, dte, dnw, dnb, None)
    flat = _tensors(args)
    # A fresh placeholder per slot: custom-op outputs may not alias each other.
    return _slots([g if need and g is not None else no_grad_placeholder(flat)
                   for g, need in zip(got, _tensor_needs(needs_grad, args[_PADDING_SLOT]), strict=True)],
                  args[_PADDING_SLOT], args)


EMBEDDING = define(OpDef(
    name="embedding",
    args=("Tensor? input_ids, Tensor? inputs_embeds, Tensor token_type_ids, Tensor position_ids, "
          "Tensor word_embeddings, Tensor? transformation_weight, Tensor? transformation_bias, "
          "Tensor position_embeddings, Tensor token_type_embeddings, Tensor norm_weight, Tensor norm_bias, "
          "int? padding_idx, bool trigram, str norm, float eps, float dropout_p, Tensor? seed"),
    returns="Tensor",
    reference_forward=reference.embedding,
    fake=_fake,
    cpu=_embedding_cpu,
    cpu_backward=_embedding_cpu_backward,
    triton=_embedding_triton,
    triton_backward=_embedding_triton_backward,
))
define_saving(EMBEDDING, _train_cpu, _train_saved_fake, _train_cpu_backward)


def embedding(input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None,
              token_type_ids: torch.Tensor, position_ids: torch.Tensor, word_embeddings: torch.Tensor,
              transformation_weight: torch.Tensor | None, transformation_bias: torch.Tensor | None,
              position_embeddings: torch.Tensor, token_type_embeddings: torch.Tensor,
              norm_weight: torch.Tensor, norm_bias: torch.Tensor, padding_idx: int | None = None,
              trigram: bool = True, norm: str = "nonorm", eps: float = 1e-5,
              dropout_p: float = 0.0) -> torch.Tensor:
    """MobileBERT's embeddings [B, S, hidden]; exactly one of input_ids / inputs_embeds is given.

    `token_type_ids` and `position_ids` are [B, S] (position_ids may be [1, S]).
    """
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("embedding: expected exactly one of input_ids or inputs_embeds, got "
                         f"{'both' if input_ids is not None else 'neither'}")
    if position_ids.dim() == 1 or (position_ids.dim() == 2 and position_ids.shape[0] == 1):
        # [S] or [1, S]: the same positions for every row (other shapes go to the op, which names them)
        position_ids = position_ids.expand(token_type_ids.shape[0], position_ids.shape[-1])
    args = (input_ids, inputs_embeds, token_type_ids, position_ids, word_embeddings, transformation_weight,
            transformation_bias, position_embeddings, token_type_embeddings, norm_weight, norm_bias,
            padding_idx, trigram, norm, eps, dropout_p)
    if backend.current_backend() == "reference":
        return reference.embedding(*args, None)
    seed = new_seed() if dropout_p > 0 else None
    if saving_applies([inputs_embeds if input_ids is None else word_embeddings, transformation_weight,
                       transformation_bias, position_embeddings, token_type_embeddings, norm_weight, norm_bias]):
        return torch.ops.mbkernels.embedding_train(*args, seed)[0]
    return torch.ops.mbkernels.embedding(*args, seed)
