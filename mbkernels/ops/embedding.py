"""embedding: lookup (or `inputs_embeds`) → trigram concat [next, cur, prev] → Linear → + position
+ token type → N → dropout.

On CPU, with a float32 lookup source and dropout from a seed, the forward runs `_C.embedding_forward`
(csrc/core/ops/embedding.h: the Linear on the packed GEMM with position + type and the norm in its
epilogue, dropout after it), from input_ids or inputs_embeds, with or without the Linear. When a
gradient is wanted it keeps the pre-norm sum [rows, hidden] instead (the GEMM, then the standalone
norm: the same output), so the backward runs no forward GEMM again; without it the backward
recomputes the sum on the same core. The backward: the dropout mask again from the seed, the norm's
backward with its column sums in `_C`, the gradient GEMMs on torch, and the lookups' gradients
(position, type, word rows through the trigram concat) as `_C`'s serial scatter-adds, so repeated
ids sum in token order, the same on every run. Other dtypes run the reference. On CUDA, or under
`use_backend("triton")`, both directions run `mbkernels/triton/embedding.py` (hidden widths up to
512).
"""
from __future__ import annotations

import torch

from mbkernels import backend
from mbkernels.ops import _cpu, reference
from mbkernels.ops._registry import Kernel, OpDef, define


def _fake(input_ids, inputs_embeds, token_type_ids, position_ids, word_embeddings, transformation_weight,
          transformation_bias, position_embeddings, *rest):
    b, s = token_type_ids.shape
    return word_embeddings.new_empty((b, s, position_embeddings.shape[1]))


def _supports_cpu(input_ids, inputs_embeds, token_type_ids, position_ids, word_embeddings, *rest):
    dropout_p, seed = rest[-2:]
    source = inputs_embeds if inputs_embeds is not None else word_embeddings
    # Dropout without a seed is torch's RNG dropout: only the reference has it.
    return source.dtype == torch.float32 and not (dropout_p > 0 and seed is None)


def _ids(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype == torch.int64 and t.is_contiguous() else t.to(torch.int64).contiguous()


class _Operands:
    """One call's tensors as the core reads them (contiguous, int64 ids) and `_C`'s leading arguments."""

    def __init__(self, input_ids, inputs_embeds, token_type_ids, position_ids, word_embeddings,
                 transformation_weight, transformation_bias, position_embeddings, token_type_embeddings,
                 trigram):
        self.batch, self.seq = token_type_ids.shape
        self.rows = self.batch * self.seq
        self.ids = _ids(input_ids) if input_ids is not None else None
        self.embeds = inputs_embeds.contiguous() if inputs_embeds is not None else None
        self.types, self.pos = _ids(token_type_ids), _ids(position_ids)
        self.words = word_embeddings.contiguous()
        self.positions = position_embeddings.contiguous()
        self.type_table = token_type_embeddings.contiguous()
        self.e = word_embeddings.shape[1]
        self.width = 3 * self.e if trigram else self.e
        self.hidden = position_embeddings.shape[1]
        packed = _cpu.packed(transformation_weight, transformation_bias) if transformation_weight is not None else None
        self.leading = (_cpu.ptr(self.ids), _cpu.ptr(self.embeds), self.types.data_ptr(), self.pos.data_ptr(),
                        self.batch, self.seq, self.words.data_ptr(), self.words.shape[0], self.e, trigram, packed,
                        self.positions.data_ptr(), self.positions.shape[0], self.type_table.data_ptr(),
                        self.type_table.shape[0], self.hidden)

    def forward(self, norm, norm_weight, norm_bias, eps, dropout_p, seed, y, pre_norm=None, workspace=None):
        """y [rows, hidden] = dropout(N(s)) (norm "none": s itself); pre_norm keeps s; workspace [rows,
        width] receives the trigram rows."""
        if self.rows:
            # Held here: a temporary's data_ptr() would outlive the tensor.
            norm_weight, norm_bias = norm_weight.contiguous(), norm_bias.contiguous()
            backend._C.embedding_forward(*self.leading, norm, norm_weight.data_ptr(), norm_bias.data_ptr(), eps,
                                         dropout_p, _cpu.seed_of(seed), y.data_ptr(), _cpu.ptr(pre_norm),
                                         _cpu.ptr(workspace), _cpu.threads())
        return y

    def trigram_rows(self) -> torch.Tensor:
        t = self.words.new_empty((self.rows, self.width))
        if self.rows:
            backend._C.embedding_rows(*self.leading, t.data_ptr())
        return t


def _operands(args) -> _Operands:
    return _Operands(*args[:9], args[12])


def _cpu_forward(*args, save):
    o = _operands(args)
    norm, eps, dropout_p, seed = args[13:17]
    norm_weight, norm_bias = args[9:11]
    y = o.words.new_empty((o.batch, o.seq, o.hidden))
    if save:
        s = o.words.new_empty((o.rows, o.hidden))
        o.forward(norm, norm_weight, norm_bias, eps, dropout_p, seed, y, pre_norm=s)
        return y, [s]
    o.forward(norm, norm_weight, norm_bias, eps, dropout_p, seed, y)
    return y, []


def _saved_fake(*args):
    out = _fake(*args)
    return [out.new_empty((out.shape[0] * out.shape[1], out.shape[2]))]


def _scatter_add(like: torch.Tensor, src: torch.Tensor, index: torch.Tensor, skip: int = -1) -> torch.Tensor:
    """The gradient of a row lookup `like[index]`: src's rows summed into zeros at `index`, serially
    (repeated indices sum in row order: deterministic), rows whose index is `skip` left out."""
    out = torch.zeros(like.shape, dtype=src.dtype)
    if src.shape[0]:
        backend._C.scatter_add_rows(src.data_ptr(), src.stride(0), index.data_ptr(), src.shape[0], src.shape[1],
                                    skip, out.data_ptr())
    return out


def _cpu_backward(grads, needs_grad, saved, input_ids, inputs_embeds, token_type_ids, position_ids,
                  word_embeddings, transformation_weight, transformation_bias, position_embeddings,
                  token_type_embeddings, norm_weight, norm_bias, padding_idx, trigram, norm, eps, dropout_p, seed):
    o = _Operands(input_ids, inputs_embeds, token_type_ids, position_ids, word_embeddings, transformation_weight,
                  transformation_bias, position_embeddings, token_type_embeddings, trigram)
    rows, hidden = o.rows, o.hidden
    has_w = transformation_weight is not None
    # The pre-norm sum s = t Wᵀ + bias + position + type: saved, or recomputed leaving the trigram rows
    # t in the workspace (with s saved, t is gathered again only for the weight gradient: a copy).
    if saved:
        (s,), x = saved, (o.trigram_rows() if has_w and needs_grad[5] else None)
    else:
        s, x = o.words.new_empty((rows, hidden)), o.words.new_empty((rows, o.width))
        o.forward("none", norm_weight, norm_bias, eps, 0.0, None, s, workspace=x)
    # The output's gradient through the dropout (the forward's mask from the seed), then the norm's.
    g = grads[0].reshape(rows, hidden)
    if dropout_p > 0:
        g = g.clone(memory_format=torch.contiguous_format)
        if rows:
            backend._C.dropout_rows(g.data_ptr(), hidden, rows, hidden, dropout_p, _cpu.seed_of(seed), 0, 0, 0,
                                    _cpu.threads())
    else:
        g = g.contiguous()
    gs, gnw, gnb, gbias = _cpu.norm_backward(norm, g, s, norm_weight.contiguous(), eps)
    out = [None] * 12
    if needs_grad[7]:
        out[7] = _scatter_add(position_embeddings, gs, o.pos)
    if needs_grad[8]:
        out[8] = _scatter_add(token_type_embeddings, gs, o.types)
    out[9], out[10] = gnw, gnb
    if has_w and needs_grad[5]:
        out[5] = torch.mm(gs.t(), x)
    if transformation_bias is not None:
        out[6] = gbias
    to_words = input_ids is not None and needs_grad[4]
    to_embeds = input_ids is None and needs_grad[1]
    if to_words or to_embeds:
        # dL/dt [rows, 3E or E], then through the trigram concat to dL/de [rows, E].
        gx = torch.mm(gs, transformation_weight) if has_w else gs
        ge = gx
        if trigram:
            ge = gx.new_empty((rows, o.e))
            if rows:
                backend._C.trigram_backward(gx.data_ptr(), rows, o.seq, o.e, ge.data_ptr())
        if to_embeds:
            out[1] = ge.view(inputs_embeds.shape)
        else:
            out[4] = _scatter_add(word_embeddings, ge, o.ids, -1 if padding_idx is None else padding_idx)
    if input_ids is None and needs_grad[4]:
        # The table is unused beside inputs_embeds: its gradient is zero (as the reference's autograd).
        out[4] = torch.zeros_like(word_embeddings)
    return out


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
    kernels=(Kernel("cpu", _supports_cpu, _cpu_forward, _cpu_backward, _saved_fake),
             Kernel("triton", lambda *args: _triton_embedding(args) is not None, _triton_forward,
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
