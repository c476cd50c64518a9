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
from mbkernels.ops._registry import Kernel, OpDef, define


def _fake(input_ids, inputs_embeds, token_type_ids, position_ids, word_embeddings, transformation_weight,
          transformation_bias, position_embeddings, *rest):
    b, s = token_type_ids.shape
    return word_embeddings.new_empty((b, s, position_embeddings.shape[1]))


def _triton_embedding(args):
    """The Triton embedding module when it runs these inputs, else None."""
    from mbkernels import triton as mbt
    if not mbt.available():
        return None
    from mbkernels.triton import embedding as tk
    _, embeds, _, _, table, wt, _, pe, _, _, _, _, trigram, norm = args[:14]
    return tk if tk.supported(embeds, table, wt, pe, norm, trigram) else None


def _triton_forward(*args, save):
    return _triton_embedding(args).embedding_forward(*args), []


def _triton_backward(grads, needs_grad, saved, *args):
    dembeds, dtable, dwt, dbt, dpe, dte, dnw, dnb = _triton_embedding(args).embedding_backward(grads[0], *args)
    return [None, dembeds, None, None, dtable, dwt, dbt, dpe, dte, dnw, dnb, None]


EMBEDDING = define(OpDef(
    name="embedding",
    args=("Tensor? input_ids, Tensor? inputs_embeds, Tensor token_type_ids, Tensor position_ids, "
          "Tensor word_embeddings, Tensor? transformation_weight, Tensor? transformation_bias, "
          "Tensor position_embeddings, Tensor token_type_embeddings, Tensor norm_weight, Tensor norm_bias, "
          "int? padding_idx, bool trigram, str norm, float eps, float dropout_p, Tensor? seed"),
    outputs=1,
    reference=reference.embedding,
    fake=_fake,
    kernels=(Kernel("triton", lambda *args: _triton_embedding(args) is not None, _triton_forward,
                    _triton_backward),),
))


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
    return EMBEDDING(input_ids, inputs_embeds, token_type_ids, position_ids, word_embeddings, transformation_weight,
                     transformation_bias, position_embeddings, token_type_embeddings, norm_weight, norm_bias,
                     padding_idx, trigram, norm, eps, dropout_p, None)
