"""The C++ training path of attention and bottleneck_attention on every ISA this machine runs: the
forward with attention and hidden dropout and the backward (_C.attention_backward; bottleneck_attention's
kernel in mbkernels/ops/bottleneck_attention.py), output and every gradient against the float64 reference's
autograd with the same seed (so the same kept elements), the returned scores' gradient included;
tokens 1, 7, 127, 129, padding masks with a fully masked sequence, non-contiguous inputs, the
IB-BERT teacher's head size 256, thread-count independence and opcheck with dropout."""

import pytest
import torch

from mbkernels import backend
from mbkernels.ops import OPS, reference
from mbkernels.ops.bottleneck_attention import BOTTLENECK_ATTENTION
from mbkernels.testing import rel_err

from op_cases import attention_case, bottleneck_attention_case

_C = pytest.importorskip("mbkernels._C", reason="mbkernels._C is not built")

SEED = torch.tensor(20241124)


def _unmask(t):
    return torch.where(t > torch.finfo(t.dtype).min, t, 0)


def _run(call, inputs, seed=3):
    """Outputs of call(*inputs) and the gradients of a fixed random projection of them (masked
    scores left out) w.r.t. every input that requires grad."""
    outs = call(*inputs)
    g = torch.Generator().manual_seed(seed)
    loss = sum((_unmask(o) * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype)).sum()
               for o in outs if o.numel())
    leaves = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)  # v is unused when only scores are
    return outs, [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)]


def _check(op_call, ref_call, inputs, name):
    """The fused op vs the reference (same seed) in float64: per-row error ≤ 1e-5, or ≤ 2× fp32
    torch's own error where that is worse (rows that cancel, as tests/test_ops.py's rule)."""
    outs, grads = _run(op_call, inputs)
    isa = f"cpu:{backend.active_isa()}"
    assert backend.last_ran[name] == isa and backend.last_ran[name + "_backward"] == isa
    leaves64 = [t.detach().double().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor)
                and t.is_floating_point() else t for t in inputs]
    ref_outs, ref_grads = _run(ref_call, leaves64)
    f32_outs, f32_grads = _run(ref_call, inputs)
    for kind, got, ref, f32 in (("output", outs, ref_outs, f32_outs), ("grad", grads, ref_grads, f32_grads)):
        for i, (a, r, f) in enumerate(zip(got, ref, f32, strict=True)):
            if kind == "output" and i == 1 and r.numel():  # scores: masked entries exactly finfo.min
                assert torch.equal(a == torch.finfo(a.dtype).min, r == torch.finfo(r.dtype).min)
            a, r, f = _unmask(a), _unmask(r), _unmask(f)
            bound = max(1e-5, 2 * rel_err(f, r))
            assert rel_err(a, r) <= bound, f"{name} {kind} {i}: {rel_err(a, r):.3g} > {bound:.3g}"
    return outs, grads


def _attention(q, k, v, mask, p, return_scores):
    seed = SEED if p > 0 else None
    return (lambda q, k, v: torch.ops.mbkernels.attention(q, k, v, mask, p, seed, return_scores, True)[:2],
            lambda q, k, v: reference.attention(q, k, v, mask, p, seed, return_scores))


@pytest.mark.parametrize("s", [1, 7, 127, 129])
@pytest.mark.parametrize("p", [0.0, 0.1])
def test_attention_backward(isa, s, p):
    _, (q, k, v, mask), _ = attention_case(b=2, h=2, s=s, d=32, seed=s)
    op, ref = _attention(q, k, v, mask, p, return_scores=s != 127)
    _check(op, ref, [q, k, v], "attention")


def test_attention_fully_masked_odd_head_and_strided(isa):
    """A sequence attending to nothing (uniform probabilities, no score gradient), head size 17,
    q, k, v stored as [B, S, H, D] (viewed as [B, H, S, D]), dropout and the scores' gradient."""
    _, (q, k, v, mask), _ = attention_case(b=3, h=2, s=11, d=17)
    mask = mask.clone()
    mask[1] = False
    strided = [t.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_() for t in (q, k, v)]
    assert not strided[0].is_contiguous()
    op, ref = _attention(*strided, mask.to(torch.int64), 0.3, return_scores=True)
    _check(op, ref, strided, "attention")


def test_attention_backward_is_thread_count_independent(isa):
    _, (q, k, v, mask), _ = attention_case(b=2, h=4, s=65, d=32)
    got = []
    old = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs = torch.ops.mbkernels.attention(q, k, v, mask, 0.1, SEED, True, True)
            got.append(torch.autograd.grad(outs[0].sum() + _unmask(outs[1]).sum(), (q, k, v)))
    finally:
        torch.set_num_threads(old)
    for a, b in zip(*got):
        assert torch.equal(a, b)


def _bottleneck(args, kwargs, attn_p, hidden_p, save=True):
    """The op (with the seed given; `save`: keep the intermediates, else the backward recomputes
    them) and the reference, over h and the weights that are not None."""
    h, mask, *weights = args
    kw = dict(kwargs)
    rest = (kw["num_heads"], kw["mode"], kw["norm"], kw["eps"], attn_p, hidden_p,
            SEED if attn_p > 0 or hidden_p > 0 else None, kw["return_scores"])
    live = [i for i, w in enumerate(weights) if w is not None]

    def split(inputs):
        ws = list(weights)
        for i, t in zip(live, inputs[1:]):
            ws[i] = t
        return inputs[0], ws

    def op(*inputs):
        h, ws = split(inputs)
        return tuple(BOTTLENECK_ATTENTION.op(h, mask, *ws, *rest, save)[:2])

    def ref(*inputs):
        h, ws = split(inputs)
        return reference.bottleneck_attention(h, mask, *ws, *rest)

    return op, ref, [h, *(weights[i] for i in live)]


@pytest.mark.parametrize("mode", ["shared", "bottleneck", "full", "none"])
@pytest.mark.parametrize("norm", ["nonorm", "layernorm"])
@pytest.mark.parametrize("save", [True, False])
def test_bottleneck_attention_backward(isa, mode, norm, save):
    fn, args, kwargs = bottleneck_attention_case(s=7, mode=mode, norm=norm, return_scores=mode != "none")
    _check(*_bottleneck(args, kwargs, 0.1, 0.1, save), "bottleneck_attention")


@pytest.mark.parametrize("s", [1, 127, 129])
def test_bottleneck_attention_backward_tokens_and_padding(s):
    """MobileBERT's widths; the last sequence of three attends to nothing."""
    fn, args, kwargs = bottleneck_attention_case(b=3, s=s, hidden=512, intra=128, heads=4, return_scores=s == 129,
                                                 seed=s)
    args = list(args)
    args[1] = args[1].clone()
    args[1][2] = False
    _check(*_bottleneck(args, kwargs, 0.1, 0.1), "bottleneck_attention")


def test_bottleneck_attention_backward_without_dropout_and_strided_input():
    fn, args, kwargs = bottleneck_attention_case(b=2, s=9, mode="full", norm="layernorm")
    args = list(args)
    h = args[0].detach()
    args[0] = torch.randn(2, 9, h.shape[2] + 3)[..., :h.shape[2]].copy_(h).requires_grad_()  # row stride > width
    _check(*_bottleneck(args, kwargs, 0.0, 0.0), "bottleneck_attention")


@pytest.mark.parametrize("name", ["attention", "bottleneck_attention"])
def test_only_the_scores_get_a_gradient(name):
    """Attention transfer may use a layer's scores alone: the output's gradient arrives empty."""
    if name == "attention":
        _, (q, k, v, mask), _ = attention_case(b=2, h=2, s=9, d=16)
        op, ref = _attention(q, k, v, mask, 0.1, return_scores=True)
        inputs = [q, k, v]
    else:
        fn, args, kwargs = bottleneck_attention_case(s=9)
        op, ref, inputs = _bottleneck(args, kwargs, 0.1, 0.1)
    def only_scores(call):
        def run(*x):
            out, scores = call(*x)
            return out.new_empty(0), scores
        return run

    _check(only_scores(op), only_scores(ref), inputs, name)


def test_teacher_head_size_256():
    fn, args, kwargs = bottleneck_attention_case(s=9, hidden=512, intra=1024, heads=4, mode="full", norm="layernorm")
    _check(*_bottleneck(args, kwargs, 0.1, 0.1), "bottleneck_attention")


@pytest.mark.parametrize("save", [True, False])
def test_attention_opcheck_with_dropout(save):
    _, (q, k, v, mask), _ = attention_case(b=2, h=2, s=5, d=8)
    args = (q.detach(), k.detach(), v.detach(), mask, 0.2, SEED, True)
    op = OPS["attention"]
    torch.library.opcheck(op.op, (*args, save))
    *outs, saved = op.op(*args, save)
    assert saved == []  # the attention core recomputes P per query block: nothing to keep
    grads = [torch.randn_like(o) for o in outs]
    needs = [t is not None and t.is_floating_point() for t in op.tensors(args)]
    torch.library.opcheck(op.backward_op, (grads, needs, saved, *args))
    assert backend.last_ran["attention_backward"].startswith("cpu:")


@pytest.mark.parametrize("mode", ["shared", "bottleneck", "full", "none"])
@pytest.mark.parametrize("save", [True, False])
def test_bottleneck_attention_opcheck_with_dropout(mode, save):
    fn, (h, mask, *weights), kwargs = bottleneck_attention_case(s=5, hidden=32, intra=16, mode=mode)
    args = (h.detach(), mask, *[w.detach() if w is not None else None for w in weights], kwargs["num_heads"],
            kwargs["mode"], kwargs["norm"], kwargs["eps"], 0.2, 0.2, SEED, True)
    op = OPS["bottleneck_attention"]
    torch.library.opcheck(op.op, (*args, save))
    *outs, saved = op.op(*args, save)
    assert bool(saved) == save
    grads = [torch.randn_like(o) for o in outs]
    needs = [t is not None and t.is_floating_point() for t in args if isinstance(t, torch.Tensor) or t is None]
    torch.library.opcheck(op.backward_op, (grads, needs, saved, *args))
    assert backend.last_ran["bottleneck_attention_backward"].startswith("cpu:")


def test_dropout_argument_errors():
    """A probability outside [0, 1) is refused by the op; a gradient of the wrong shape by the backward
    op (dropout without a seed is not an error: the reference runs it, see below)."""
    _, (q, k, v, mask), _ = attention_case(s=3)
    q, k, v = q.detach(), k.detach(), v.detach()
    with pytest.raises(ValueError, match=r"attention: dropout_p: expected a probability in \[0, 1\), got 1.0"):
        torch.ops.mbkernels.attention(q, k, v, mask, 1.0, SEED, False, False)
    with pytest.raises(ValueError, match=r"attention_backward: grads\[0\]: expected torch.float32 of shape"):
        torch.ops.mbkernels.attention_backward([q[:, :1], q.new_empty(0)], [True] * 3 + [False] * 2, [], q, k, v,
                                               mask, 0.0, None, False)


@pytest.mark.parametrize("mode", ["shared", "bottleneck", "full", "none"])
def test_saved_intermediates_give_the_recomputed_gradients(mode):
    """The CPU kernel's forward with save=True keeps the forward's intermediates and the backward
    takes them as `saved`: the fused forward's result, and exactly the recomputing backward's."""
    fn, (h, mask, *weights), kwargs = bottleneck_attention_case(s=9, mode=mode, norm="layernorm")
    h, weights = h.detach(), [w.detach() if w is not None else None for w in weights]
    kernel = BOTTLENECK_ATTENTION.kernels[0]
    assert kernel.device == "cpu"
    args = (h, mask, *weights, kwargs["num_heads"], mode, "layernorm", 1e-12, 0.1, 0.1, SEED, True)
    assert kernel.supports(*args)
    out, scores, saved = kernel.forward(*args, save=True)
    ref_out, ref_scores, nothing = kernel.forward(*args, save=False)
    assert saved and nothing == []
    assert [t.shape for t in saved] == [t.shape for t in kernel.saved_fake(*args)]
    assert rel_err(out, ref_out) <= 1e-6 and rel_err(_unmask(scores), _unmask(ref_scores)) <= 1e-6
    g, gs = torch.randn_like(out), torch.randn_like(scores)
    needs = [True, False] + [w is not None for w in weights] + [False]
    got = kernel.backward([g, gs], needs, saved, *args)
    want = kernel.backward([g, gs], needs, [], *args)
    assert len(got) == len(want) == 21
    for a, b, need in zip(got, want, needs):
        assert (a is None) == (b is None) and (a is not None) == need
        if a is not None:
            assert torch.equal(a, b)


def test_dropout_without_a_seed_runs_the_reference():
    """seed=None with dropout is torch's RNG dropout, which only the reference has."""
    _, (q, k, v, mask), _ = attention_case(s=5)
    out, _, _ = torch.ops.mbkernels.attention(q, k, v, mask, 0.1, None, False, True)
    out.sum().backward()
    assert backend.last_ran["attention"] == backend.last_ran["attention_backward"] == "reference"
