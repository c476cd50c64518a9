"""The embedding op's CPU kernel (mbkernels/ops/embedding.py over `_C.embedding_forward`, its saving
forward and backward) on every ISA this machine runs, against the float64 reference and its
autograd: trigram or not, both norms, odd token counts, input_ids or inputs_embeds, with or without
the transformation Linear, padding_idx and repeated ids, dropout with the reference's mask, strided
inputs and gradients, an empty batch; the saved pre-norm sum gives the recompute's gradients bit for
bit; deterministic gradients; opcheck; an id out of range and bad arguments are errors naming them."""

import pytest
import torch

import mbkernels
from mbkernels import backend, ops
from mbkernels.ops import OPS, reference
from mbkernels.ops.embedding import EMBEDDING
from mbkernels.testing import rel_err

from op_cases import embedding_case
from test_ops import check_against_reference

_C = pytest.importorskip("mbkernels._C", reason="mbkernels._C is not built")

SEED = torch.tensor(1234)
CPU = EMBEDDING.kernels[0]
assert CPU.device == "cpu"


def _detached(args):
    return [a.detach() if isinstance(a, torch.Tensor) else a for a in args]


@pytest.mark.parametrize("trigram,norm", [(True, "nonorm"), (False, "layernorm"), (True, "layernorm")])
@pytest.mark.parametrize("s", [1, 7, 129])
def test_embedding_forward(isa, s, trigram, norm):
    fn, args, kwargs = embedding_case(s=s, trigram=trigram, norm=norm)
    args = _detached(args)
    out = fn(*args, **kwargs)
    assert backend.last_ran["embedding"] == f"cpu:{isa}"
    with mbkernels.use_backend("reference"):
        ref = fn(*[a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args],
                 **kwargs)
    assert rel_err(out, ref) <= 1e-5


# Every gradient against the float64 reference's autograd (check_against_reference: per-row ≤ 1e-5,
# or ≤ 2x fp32 autograd's own error where that is worse), the C++ forward and backward both ran.
@pytest.mark.parametrize("trigram,norm", [(True, "nonorm"), (False, "layernorm"), (True, "layernorm"),
                                          (False, "nonorm")])
@pytest.mark.parametrize("s", [1, 7, 129])
def test_embedding_backward(isa, s, trigram, norm):
    fn, args, kwargs = embedding_case(b=1 if s == 129 else 2, s=s, trigram=trigram, norm=norm, seed=s)
    check_against_reference(fn, args, kwargs, "embedding")
    assert backend.last_ran["embedding_backward"] == f"cpu:{isa}"


def _embeds_case(s, trigram, norm):
    """inputs_embeds [B, S, E] (a leaf) instead of input_ids."""
    fn, args, kwargs = embedding_case(s=s, trigram=trigram, norm=norm, seed=s)
    ids, _, types, pos, table, *rest = args
    embeds = table.detach()[ids].mul(1.5).requires_grad_()
    return fn, (None, embeds, types, pos, table.detach(), *rest), kwargs


@pytest.mark.parametrize("trigram,norm", [(True, "nonorm"), (False, "layernorm")])
@pytest.mark.parametrize("s", [1, 7])
def test_inputs_embeds(isa, s, trigram, norm):
    fn, args, kwargs = _embeds_case(s, trigram, norm)
    check_against_reference(fn, args, kwargs, "embedding")
    assert backend.last_ran["embedding_backward"] == f"cpu:{isa}"


@pytest.mark.parametrize("trigram,norm", [(True, "layernorm"), (False, "nonorm")])
@pytest.mark.parametrize("embeds", [False, True])
def test_without_transformation(isa, trigram, norm, embeds):
    """transformation_weight=None: the (trigram) rows are the sum's first term (3E or E == hidden)."""
    emb = 16
    fn, args, kwargs = embedding_case(s=7, emb=emb, hidden=3 * emb if trigram else emb, trigram=trigram, norm=norm)
    args = list(args)
    args[5] = args[6] = None
    if embeds:
        args[1] = args[4].detach()[args[0]].requires_grad_()
        args[0] = None
    check_against_reference(fn, tuple(args), kwargs, "embedding")
    assert backend.last_ran["embedding_backward"] == f"cpu:{isa}"


@pytest.mark.parametrize("padding_idx", [None, 0, 4])
def test_repeated_ids_and_padding_idx(isa, padding_idx):
    """Few ids, many tokens: the word rows' gradients sum many scatter-add collisions; the
    padding row gets none (as in nn.Embedding)."""
    fn, args, kwargs = embedding_case(b=3, s=33, vocab=5, trigram=True, norm="layernorm")
    kwargs["padding_idx"] = padding_idx
    check_against_reference(fn, args, kwargs, "embedding")
    table = args[4]
    table.grad = None
    fn(*args, **kwargs).sum().backward()
    assert backend.last_ran["embedding_backward"] == f"cpu:{isa}"
    if padding_idx is not None:
        assert torch.equal(table.grad[padding_idx], torch.zeros_like(table.grad[padding_idx]))
    assert (table.grad.abs().sum(1) > 0).sum() == (5 if padding_idx is None else 4)


@pytest.mark.parametrize("trigram,norm", [(True, "nonorm"), (False, "layernorm")])
@pytest.mark.parametrize("embeds", [False, True])
def test_dropout_matches_the_reference_mask(isa, trigram, norm, embeds):
    """With a fixed seed the C++ op drops exactly the reference's elements (forward and backward)."""
    fn, args, kwargs = _embeds_case(7, trigram, norm) if embeds else embedding_case(s=7, trigram=trigram, norm=norm)
    p = 0.3
    op_args = (*args, kwargs["padding_idx"], trigram, norm, kwargs["eps"], p, SEED)
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    out, saved = torch.ops.mbkernels.embedding(*op_args, True)
    assert backend.last_ran["embedding"] == f"cpu:{isa}" and len(saved) == 1
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
    got = torch.autograd.grad(out, leaves, g)
    assert backend.last_ran["embedding_backward"] == f"cpu:{isa}"
    args64 = [a.detach().double().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor)
              and a.is_floating_point() else a for a in args]
    ref = reference.embedding(*args64, kwargs["padding_idx"], trigram, norm, kwargs["eps"], p, SEED)
    assert torch.equal(out == 0, ref == 0) and (out == 0).float().mean().item() == pytest.approx(p, abs=0.05)
    assert rel_err(out, ref) <= 1e-5
    leaves64 = [a for a in args64 if isinstance(a, torch.Tensor) and a.requires_grad]
    for i, (a, b) in enumerate(zip(got, torch.autograd.grad(ref, leaves64, g.double()))):
        assert rel_err(a, b) <= 1e-5, f"gradient {i}: {rel_err(a, b):.3g}"


@pytest.mark.parametrize("trigram,norm", [(True, "nonorm"), (False, "layernorm")])
@pytest.mark.parametrize("p", [0.0, 0.2])
def test_saved_pre_norm_matches_the_recompute(trigram, norm, p):
    """Training keeps the pre-norm sum (save=True); without it the backward recomputes it on the same
    core: the same outputs and gradients bit for bit (with dropout too)."""
    fn, args, kwargs = embedding_case(s=33, trigram=trigram, norm=norm)
    op_args = (*args, kwargs["padding_idx"], trigram, norm, kwargs["eps"], p, SEED)
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    out = fn(*args, **kwargs)
    assert backend.last_ran["embedding"] == f"cpu:{backend.active_isa()}"
    out, saved = torch.ops.mbkernels.embedding(*op_args, True)
    assert len(saved) == 1 and saved[0].shape == (2 * 33, 128)
    g = torch.randn(out.shape)
    saved_grads = torch.autograd.grad(out, leaves, g)
    assert backend.last_ran["embedding_backward"] == f"cpu:{backend.active_isa()}"
    op_out, nothing = torch.ops.mbkernels.embedding(*op_args, False)
    assert nothing == []
    op_grads = torch.autograd.grad(op_out, leaves, g)
    assert backend.last_ran["embedding_backward"] == f"cpu:{backend.active_isa()}"
    assert torch.equal(out, op_out)
    assert all(torch.equal(a, b) for a, b in zip(saved_grads, op_grads))


@pytest.mark.parametrize("trigram,norm,embeds,transformation",
                         [(True, "nonorm", False, True), (False, "layernorm", True, True),
                          (True, "layernorm", True, False), (False, "nonorm", False, False)])
def test_kernel_saving_and_recomputing_backwards_agree(trigram, norm, embeds, transformation):
    """The CPU Kernel's functions directly: forward(save=True) keeps the pre-norm sum shaped as
    saved_fake says and gives forward(save=False)'s output; its backward given that sum or nothing
    (recomputing it) gives the same gradient in every slot, bit for bit."""
    emb = 16
    fn, args, kwargs = embedding_case(s=9, emb=emb, hidden=128 if transformation else (3 if trigram else 1) * emb,
                                      trigram=trigram, norm=norm)
    args = list(_detached(args))
    if not transformation:
        args[5] = args[6] = None
    if embeds:
        args[1], args[0] = args[4][args[0]].mul(1.5), None
    op_args = (*args, kwargs["padding_idx"], trigram, norm, kwargs["eps"], 0.2, SEED)
    assert CPU.supports(*op_args)
    out, saved = CPU.forward(*op_args, save=True)
    frozen, nothing = CPU.forward(*op_args, save=False)
    assert nothing == [] and torch.equal(out, frozen)
    assert [t.shape for t in saved] == [t.shape for t in CPU.saved_fake(*op_args)]
    g = torch.randn(out.shape)
    needs = [t is not None and t.is_floating_point() for t in EMBEDDING.tensors(op_args)]
    with_saved = CPU.backward([g], needs, saved, *op_args)
    recomputed = CPU.backward([g], needs, [], *op_args)
    assert len(with_saved) == len(recomputed) == len(needs) == 12
    for i, (a, b) in enumerate(zip(with_saved, recomputed)):
        assert (a is None) == (b is None), f"slot {i}"
        assert a is None or torch.equal(a, b), f"slot {i}"


def test_non_contiguous_inputs_and_gradient(isa):
    """Strided inputs_embeds, tables and output gradient: the C++ op copies what it must."""
    fn, args, kwargs = _embeds_case(9, True, "layernorm")
    _, embeds, types, pos, table, wt, bt, pe, te, nw, nb = args
    embeds = embeds.detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    wt = wt.detach().t().contiguous().t().requires_grad_()
    pe = pe.detach()[:, ::1].t().contiguous().t().requires_grad_()
    assert not (embeds.is_contiguous() or wt.is_contiguous() or pe.is_contiguous())
    args = (None, embeds, types.t().contiguous().t(), pos, table, wt, bt, pe, te, nw, nb)
    check_against_reference(fn, args, kwargs, "embedding")
    out = fn(*args, **kwargs)
    g = torch.randn(out.shape[1], out.shape[0], out.shape[2]).transpose(0, 1)
    got = torch.autograd.grad(out, [embeds, wt, pe], g)
    assert backend.last_ran["embedding_backward"] == f"cpu:{isa}"
    args64 = [a.detach().double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
    for i in (1, 5, 7):
        args64[i].requires_grad_()
    with mbkernels.use_backend("reference"):
        ref = torch.autograd.grad(fn(*args64, **kwargs), [args64[1], args64[5], args64[7]], g.double())
    assert all(rel_err(a, b) <= 1e-5 for a, b in zip(got, ref))


@pytest.mark.parametrize("frozen", [False, True])
def test_empty_batch(frozen):
    """No tokens: an empty output and all-zero gradients, from the saved or the recomputed sum."""
    fn, args, kwargs = embedding_case(norm="layernorm")
    empty = [a.detach()[:0].requires_grad_(a.requires_grad) if i in (0, 2, 3) else a for i, a in enumerate(args)]
    op_args = (*empty, kwargs["padding_idx"], True, "layernorm", kwargs["eps"], 0.1, SEED)
    out, saved = torch.ops.mbkernels.embedding(*op_args, not frozen)
    assert out.shape == (0, 7, 128) and len(saved) == (0 if frozen else 1)
    out.sum().backward()
    assert backend.last_ran["embedding_backward"] == f"cpu:{backend.active_isa()}"
    assert all(not a.grad.any() for a in empty if isinstance(a, torch.Tensor) and a.requires_grad)


def test_only_the_needed_gradients_are_computed():
    """Frozen tables get no gradient: the kernel computes none for them, the backward op returns
    empty tensors for them."""
    fn, args, kwargs = embedding_case(s=7)
    ids, embeds, types, pos, *tensors = _detached(args)
    op_args = (ids, embeds, types, pos, *tensors, 0, True, "nonorm", 1e-5, 0.0, None)
    out, _ = EMBEDDING.op(*op_args, False)
    needs = [False] * 12
    needs[9] = True  # norm_weight only
    got = CPU.backward([torch.ones_like(out)], needs, [], *op_args)
    assert all(got[i] is None for i in (0, 1, 2, 3, 4, 5, 7, 8, 11))
    grads = EMBEDDING.backward_op([torch.ones_like(out)], needs, [], *op_args)
    assert backend.last_ran["embedding_backward"] == f"cpu:{backend.active_isa()}"
    assert len(grads) == 12 and grads[9].shape == tensors[5].shape
    assert all(g.numel() == 0 for i, g in enumerate(grads) if i != 9)


def test_backward_is_deterministic(threads):
    fn, args, kwargs = embedding_case(b=4, s=129, vocab=7, norm="layernorm")
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    first = None
    for _ in range(3):
        grads = torch.autograd.grad(fn(*args, **kwargs).sum(), leaves)
        first = first or grads
        assert all(torch.equal(a, b) for a, b in zip(first, grads))


@pytest.mark.parametrize("embeds", [False, True])
@pytest.mark.parametrize("save", [False, True])
def test_opcheck_with_dropout(embeds, save):
    fn, args, kwargs = _embeds_case(5, True, "layernorm") if embeds else embedding_case(s=5, norm="layernorm")
    op_args = (*_detached(args), kwargs["padding_idx"], True, "layernorm", kwargs["eps"], 0.2, SEED)
    op = OPS["embedding"]
    torch.library.opcheck(op.op, (*op_args, save))
    out, saved = op.op(*op_args, save)
    assert len(saved) == int(save)
    needs = [t is not None and t.is_floating_point() for t in op.tensors(op_args)]
    torch.library.opcheck(op.backward_op, ([torch.randn_like(out)], needs, saved, *op_args))
    assert backend.last_ran["embedding_backward"].startswith("cpu:")


def test_id_out_of_range_is_an_error_naming_it():
    """The op checks ids once, in Python (_arguments.py), before any kernel; the core keeps its own
    guard, naming the id and its position, for callers of `_C` itself."""
    fn, args, kwargs = embedding_case(s=5, vocab=50)
    ids, embeds, types, pos, table, wt, bt, pe, te, nw, nb = _detached(args)
    ids = ids.clone()
    ids[1, 3] = 50
    msg = r"mbkernels.ops.embedding: input_ids: expected values in \[0, 50\) \(the rows of word_embeddings\), got min"
    with pytest.raises(ValueError, match=msg):
        ops.embedding(ids, None, types, pos, table, wt, bt, pe, te, nw, nb)
    with pytest.raises(ValueError, match=msg):
        EMBEDDING.op(ids, None, types, pos, table, wt, bt, pe, te, nw, nb, 0, True, "nonorm", 1e-5, 0.0, None, True)
    out = torch.empty(2, 5, 128)
    pos = pos.contiguous()
    packed = backend._C.pack_weights(wt.data_ptr(), wt.stride(0), wt.stride(1), bt.data_ptr(), 128, 96)
    with pytest.raises(ValueError, match=r"embedding_forward: input_ids must be in \[0, 50\), got 50 at \[1, 3\]"):
        backend._C.embedding_forward(ids.data_ptr(), 0, types.data_ptr(), pos.data_ptr(), 2, 5,
                                     table.data_ptr(), 50, 32, True, packed, pe.data_ptr(), pe.shape[0],
                                     te.data_ptr(), 2, 128, "nonorm", nw.data_ptr(), nb.data_ptr(), 1e-5, 0.0, 0,
                                     out.data_ptr(), 0, 0, 1)


def test_argument_errors():
    """Bad arguments are errors naming the op and the argument (_arguments.py, once per call)."""
    fn, args, kwargs = embedding_case(s=5, vocab=50, emb=32, hidden=128)
    ids, embeds, types, pos, table, wt, bt, pe, te, nw, nb = _detached(args)

    def op(padding_idx=0, input_ids=ids, inputs_embeds=None, weight=wt, bias=bt, norm="nonorm", dropout_p=0.0):
        return EMBEDDING.op(input_ids, inputs_embeds, types, pos, table, weight, bias, pe, te, nw, nb, padding_idx,
                            True, norm, 1e-5, dropout_p, None, False)[0]
    for bad in (50, -1):
        with pytest.raises(ValueError, match=rf"embedding: padding_idx: expected None or a row of word_embeddings "
                                             rf"in \[0, 50\), got {bad}"):
            op(padding_idx=bad)
    with pytest.raises(ValueError, match="input_ids / inputs_embeds: expected exactly one of them, got both"):
        op(inputs_embeds=table[ids])
    with pytest.raises(ValueError, match="input_ids / inputs_embeds: expected exactly one of them, got neither"):
        op(input_ids=None)
    with pytest.raises(ValueError, match="embedding: expected exactly one of input_ids or inputs_embeds, got both"):
        ops.embedding(ids, table[ids], types, pos, table, wt, bt, pe, te, nw, nb)
    # inputs_embeds [2, 4, 32] beside [2, 5] ids: the ids are named (the batch shape comes from inputs_embeds).
    with pytest.raises(ValueError, match=r"token_type_ids: expected shape \(2, 4\), got \(2, 5\)"):
        op(input_ids=None, inputs_embeds=table[ids][:, :4])
    with pytest.raises(ValueError, match=r"transformation_weight: expected shape \(128, 96\)"):
        op(weight=wt[:, :95])
    with pytest.raises(ValueError, match=r"transformation_weight: expected a tensor of shape \(128, 96\) \(the "
                                         r"embeddings are 96 wide, the hidden size 128\), got None"):
        op(weight=None, bias=None)
    with pytest.raises(ValueError, match=r"norm: expected one of \('nonorm', 'layernorm'\), got 'rms'"):
        op(norm="rms")
    # Dropout without a seed is torch's RNG dropout (the reference), not an error.
    op(dropout_p=0.1)
    assert backend.last_ran["embedding"] == "reference"


def test_float64_runs_the_reference():
    fn, args, kwargs = embedding_case(s=5, dtype=torch.float64)
    fn(*args, **kwargs).sum().backward()
    assert backend.last_ran["embedding"] == backend.last_ran["embedding_backward"] == "reference"
