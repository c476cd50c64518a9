"""The CPU backward of linear_norm and ffn_stack (their `_C` kernels inside `<name>_backward`) on
every ISA this machine runs, against the float64 reference's autograd: both norms and activations,
odd token counts and widths, without bias or residual, non-contiguous inputs and gradients, partial
needs_grad, deterministic column sums, saved and recomputed intermediates, and the backward op's
argument errors."""

import pytest
import torch

import mbkernels
from mbkernels import backend, ops
from mbkernels.testing import rel_err

from op_cases import bottleneck_attention_case, ffn_stack_case, linear_norm_case
from test_ops import _flat, check_against_reference

_C = pytest.importorskip("mbkernels._C", reason="mbkernels._C is not built")


@pytest.mark.parametrize("norm", ["nonorm", "layernorm"])
@pytest.mark.parametrize("tokens", [1, 7, 129])
def test_linear_norm_backward(isa, tokens, norm):
    for k, n in ((512, 128), (128, 512), (131, 77)):
        fn, args, kwargs = linear_norm_case(b=1 if tokens > 129 else 2, s=tokens, k=k, n=n, norm=norm, seed=tokens)
        check_against_reference(fn, args, kwargs, "linear_norm")
        assert backend.last_ran["linear_norm_backward"] == f"cpu:{isa}"


@pytest.mark.parametrize("norm", ["nonorm", "layernorm"])
def test_linear_norm_backward_without_bias_or_residual(isa, norm):
    fn, args, kwargs = linear_norm_case(s=9, k=96, n=80, norm=norm, residual=False)
    check_against_reference(fn, (args[0], args[1], None, *args[3:]), kwargs, "linear_norm")


# GELU/LayerNorm from 14 tokens up: with few tokens, rows of the earlier FFNs' W1 gradients cancel
# and their error (fp32 autograd's too, ~1e-4) depends on the rounding realization more than on
# the method; ReLU/NoNorm there follows autograd's order and matches it (test_ops runs s=1).
# ReLU/LayerNorm at 7 tokens, 12 seeds: our error / fp32 autograd's up to 4.1 (forward recomputed)
# and 7.6 (saved), both ISAs; at 14 tokens at most 1.6, at 33 at most 0.34.
@pytest.mark.parametrize("act,norm,tokens", [("relu", "nonorm", 7), ("gelu", "layernorm", 7), ("relu", "layernorm", 14),
                                             ("gelu", "nonorm", 7), ("relu", "nonorm", 129), ("gelu", "layernorm", 129)])
def test_ffn_stack_backward(isa, tokens, act, norm):
    fn, args, kwargs = ffn_stack_case(s=tokens, act=act, norm=norm, seed=tokens)
    check_against_reference(fn, args, kwargs, "ffn_stack")
    assert backend.last_ran["ffn_stack_backward"] == f"cpu:{isa}"


@pytest.mark.parametrize("n_ffn", [1, 2])
def test_ffn_stack_backward_odd_widths(isa, threads, n_ffn):
    fn, args, kwargs = ffn_stack_case(b=1, s=65, width=37, inter=70, n=n_ffn, act="gelu", norm="layernorm")
    check_against_reference(fn, args, kwargs, "ffn_stack")


@pytest.mark.parametrize("tokens", [127, 513])
def test_backward_long_sequences(tokens):
    for fn, args, kwargs in (ffn_stack_case(b=1, s=tokens), linear_norm_case(b=1, s=tokens, norm="layernorm")):
        check_against_reference(fn, args, kwargs, fn.__name__)


@pytest.mark.parametrize("name", ["linear_norm", "ffn_stack"])
def test_non_contiguous_gradient(name):
    case = linear_norm_case if name == "linear_norm" else ffn_stack_case
    fn, args, kwargs = case(s=9)
    out = fn(*args, **kwargs)
    g = torch.randn(out.shape[1], out.shape[0], out.shape[2]).transpose(0, 1)
    assert not g.is_contiguous()
    got = torch.autograd.grad(out, args[0], g)[0]
    assert backend.last_ran[name + "_backward"] == f"cpu:{_C.get_isa()}"
    x64 = args[0].detach().double().requires_grad_()
    rest = [[t.detach().double() for t in a] if isinstance(a, list) else a.detach().double() for a in args[1:]]
    with mbkernels.use_backend("reference"):
        ref = torch.autograd.grad(fn(x64, *rest, **kwargs), x64, g.double())[0]
    assert rel_err(got, ref) <= 1e-5


def test_only_the_needed_gradients_are_computed():
    """Frozen weights get no gradient (and the C++ op skips their GEMMs)."""
    fn, args, kwargs = ffn_stack_case(s=7, n=2)
    frozen = [args[0]] + [[t.detach() for t in a] for a in args[1:]]
    out = fn(*frozen, **kwargs)
    (gx,) = torch.autograd.grad(out.sum(), frozen[0])
    assert gx.shape == args[0].shape
    grads = torch.ops.mbkernels.ffn_stack_backward(
        [torch.ones_like(out)], [True] + [False] * 13, [], args[0].detach(), *[[t.detach() for t in a] for a in args[1:]],
        "relu", "nonorm", [1e-12, 1e-5], 0.0, None)
    assert backend.last_ran["ffn_stack_backward"] == f"cpu:{_C.get_isa()}"
    assert grads[0].shape == args[0].shape and all(g.numel() == 0 for g in grads[1:])


@pytest.mark.parametrize("norm", ["nonorm", "layernorm"])
def test_backward_is_deterministic(threads, norm):
    fn, args, kwargs = ffn_stack_case(b=4, s=129, act="gelu", norm=norm)
    first = None
    for _ in range(3):
        out = fn(*args, **kwargs)
        grads = torch.autograd.grad(out.sum(), [args[0], *args[2], *args[4], *args[5], *args[6]])
        if first is None:
            first = grads
        assert all(torch.equal(a, b) for a, b in zip(first, grads))


def test_backward_argument_errors():
    """The backward op checks its own arguments (grads, needs_grad, saved) before a kernel reads
    them; the forward's arguments are the op's, checked by `_arguments`."""
    fn, args, kwargs = linear_norm_case(s=3, k=32, n=16)
    x, w, b, nw, nb, r = (a.detach() for a in args)
    op = torch.ops.mbkernels.linear_norm_backward
    rest = (x, w, b, nw, nb, r, "nonorm", 1e-12, 0.0, None)
    g = torch.ones(2, 3, 16)
    with pytest.raises(ValueError, match="needs_grad: expected 7 entries"):
        op([g], [True] * 5, [], *rest)
    with pytest.raises(ValueError, match=r"grads\[0\]: expected torch.float32 of shape \(2, 3, 16\)"):
        op([g[..., :15]], [True] * 7, [], *rest)
    with pytest.raises(ValueError, match=r"grads\[0\]: expected torch.float32"):
        op([g.double()], [True] * 7, [], *rest)
    with pytest.raises(ValueError, match=r"saved: expected empty or what the forward saved .*\[\(6, 16\)\].*\[\(6, 15\)\]"):
        op([g], [True] * 7, [torch.zeros(6, 15)], *rest)
    fn, args, kwargs = ffn_stack_case(s=3, width=8, inter=16, n=2)
    flat = [[t.detach() for t in a] for a in args[1:]]
    x = args[0].detach()
    frest = (x, *flat, "relu", "nonorm", [1e-12, 1e-5], 0.0, None)
    fop = torch.ops.mbkernels.ffn_stack_backward
    with pytest.raises(ValueError, match="needs_grad: expected 14 entries"):
        fop([torch.ones(2, 3, 8)], [True], [], *frest)
    with pytest.raises(ValueError, match=r"act: expected one of \('relu', 'gelu'\)"):
        ops.ffn_stack(x, *flat, "silu", "nonorm", [1e-12, 1e-5])
    y, saved = torch.ops.mbkernels.ffn_stack(*frest, True)
    assert len(saved) == 3
    with pytest.raises(ValueError, match=r"saved: expected .*\(2, 6, 16\).*\(2, 6, 15\)"):
        fop([torch.ones(2, 3, 8)], [True] * 14, [saved[0], saved[1][..., :15].contiguous(), saved[2]], *frest)
    with pytest.raises(ValueError, match="saved: expected empty or what the forward saved"):
        fop([torch.ones(2, 3, 8)], [True] * 14, saved[:2], *frest)
    # GELU keeps nothing (the backward recomputes): a saved list is refused.
    y, none = torch.ops.mbkernels.ffn_stack(x, *flat, "gelu", "nonorm", [1e-12, 1e-5], 0.0, None, True)
    assert none == []
    with pytest.raises(ValueError, match="saved: expected empty"):
        fop([torch.ones(2, 3, 8)], [True] * 14, saved, x, *flat, "gelu", "nonorm", [1e-12, 1e-5], 0.0, None)


def test_dropout_backward_runs_the_reference():
    fn, args, kwargs = linear_norm_case(s=5)
    out = ops.linear_norm(*args, **kwargs, dropout_p=0.1)
    out.sum().backward()
    assert backend.last_ran["linear_norm_backward"] == "reference"


@pytest.mark.parametrize("name", ["linear_norm", "ffn_stack"])
@pytest.mark.parametrize("norm", ["nonorm", "layernorm"])
def test_saved_intermediates_match_the_recompute(name, norm):
    """Training keeps the forward's intermediates (save=True); without them the backward recomputes
    them. Same outputs bit for bit; same gradients (NoNorm: bit for bit, the recompute runs the same
    kernels; LayerNorm: ffn_stack's recompute normalizes row by row outside the fused forward, so
    to rounding)."""
    case = linear_norm_case if name == "linear_norm" else ffn_stack_case
    fn, args, kwargs = case(s=33, norm=norm)
    leaves = [t for t in _flat(args) if isinstance(t, torch.Tensor) and t.requires_grad]
    op = getattr(torch.ops.mbkernels, name)
    rest = ("relu", norm, kwargs["eps"], 0.0, None) if name == "ffn_stack" else (norm, 1e-12, 0.0, None)
    saved_out, saved = op(*args, *rest, True)
    assert saved and backend.last_ran[name] == f"cpu:{backend.active_isa()}"
    g = torch.randn(saved_out.shape)
    saved_grads = torch.autograd.grad(saved_out, leaves, g)
    op_out, nothing = op(*args, *rest, False)
    assert nothing == []
    op_grads = torch.autograd.grad(op_out, leaves, g)
    assert torch.equal(saved_out, op_out)
    for a, b in zip(saved_grads, op_grads):
        assert torch.equal(a, b) if norm == "nonorm" or name == "linear_norm" else rel_err(a, b) < 1e-5


def test_layernorm_over_one_feature_has_no_input_gradient(isa):
    """LayerNorm of a single feature is its bias whatever the input: the input gradient is exactly
    0. (With the compiler free to contract g * w - mean(g * w) into an FMA it was the product's
    rounding error times 1/sqrt(eps), ~1e-2.)"""
    x = torch.randn(5, 1, requires_grad=True)
    w, b = torch.randn(1, requires_grad=True), torch.randn(1, requires_grad=True)
    y = ops.layernorm(x, w, b)
    (gx,) = torch.autograd.grad(y, x, torch.randn_like(y))
    assert backend.last_ran["layernorm_backward"] == f"cpu:{isa}"
    assert torch.equal(gx, torch.zeros_like(gx))
    a = torch.randn(5, 3, requires_grad=True)
    y = ops.linear_norm(a, torch.randn(1, 3), torch.randn(1), w, b, norm="layernorm")
    (ga,) = torch.autograd.grad(y, a, torch.randn_like(y))
    assert torch.equal(ga, torch.zeros_like(ga))


@pytest.mark.parametrize("mode,norm", [("shared", "nonorm"), ("bottleneck", "layernorm"), ("full", "nonorm"),
                                       ("none", "layernorm")])
def test_bottleneck_attention_saved_intermediates_match_the_recompute(mode, norm):
    """The saving forward (save=True) keeps what the backward otherwise recomputes (the same
    composition produces both): with dropout and a gradient on the scores, the gradients are the
    same bit for bit and the outputs agree to rounding (the fused forward normalizes differently)."""
    fn, args, kwargs = bottleneck_attention_case(s=9, mode=mode, norm=norm, hidden=64, intra=32)
    seed = torch.tensor(1234)
    op_args = (*args, kwargs["num_heads"], mode, norm, 1e-12, 0.1, 0.1, seed, True)
    leaves = [t for t in args if isinstance(t, torch.Tensor) and t.requires_grad]
    op = ops.OPS["bottleneck_attention"].op
    out, scores, saved = op(*op_args, True)
    assert backend.last_ran["bottleneck_attention"] == f"cpu:{backend.active_isa()}" and saved
    g, gs = torch.randn(out.shape), torch.randn(scores.shape)
    saved_grads = torch.autograd.grad([out, scores], leaves, [g, gs])
    op_out, op_scores, nothing = op(*op_args, False)
    assert nothing == []
    op_grads = torch.autograd.grad([op_out, op_scores], leaves, [g, gs])
    assert backend.last_ran["bottleneck_attention_backward"] == f"cpu:{backend.active_isa()}"
    unmasked = scores > torch.finfo(torch.float32).min
    assert rel_err(out, op_out) <= 1e-6 and torch.equal(unmasked, op_scores > torch.finfo(torch.float32).min)
    assert rel_err(scores[unmasked], op_scores[unmasked]) <= 1e-6
    for a, b in zip(saved_grads, op_grads):
        assert torch.equal(a, b)
