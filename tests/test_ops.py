"""Every op on the fused path against the float64 reference: forward and every gradient, odd
shapes, padding masks, non-contiguous inputs, every ISA this machine runs; opcheck on every op and
every backward op; gradcheck on the reference (and on fused ops that have a float64 kernel)."""

import pytest
import torch

import mbkernels
from mbkernels import backend
from mbkernels.ops import OPS
from mbkernels.ops.dropout import keep_mask
from mbkernels.testing import rel_err

from conftest import cpu_isas
from op_cases import CASES, attention_case, bottleneck_attention_case, embedding_case, ffn_stack_case, linear_norm_case, nonorm_case

ISAS = cpu_isas() or [None]


def has_cpu_kernel(name) -> bool:
    return any(k.device == "cpu" for k in OPS[name].kernels)


def _flat(args):
    out = []
    for a in args:
        out.extend(a if isinstance(a, list) else [a])
    return out


def _to64(args):
    def conv(a):
        if isinstance(a, list):
            return [conv(x) for x in a]
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            return a.detach().double().requires_grad_(a.requires_grad)
        return a
    return tuple(conv(a) for a in args)


def _unmask(o):
    """Masked scores hold finfo(dtype).min, which differs per dtype: compare them as zeros."""
    return torch.where(o > torch.finfo(o.dtype).min, o, 0)


def _grads_of(fn, args, kwargs, be, seed=3):
    """Outputs and the gradient of a fixed random projection of them w.r.t. every float input,
    forward and backward both under backend `be`."""
    with mbkernels.use_backend(be):
        out = fn(*args, **kwargs)
        outs = out if isinstance(out, tuple) else (out,)
        g = torch.Generator().manual_seed(seed)
        loss = 0
        for o in outs:
            if o.numel():
                # finfo.min in masked scores would swamp the projection: leave those entries out.
                w = torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype).to(o.device)
                loss = loss + (_unmask(o) * w).sum()
        leaves = [t for t in _flat(args) if isinstance(t, torch.Tensor) and t.requires_grad]
        return outs, torch.autograd.grad(loss, leaves, allow_unused=True)


def check_against_reference(fn, args, kwargs, name, tol=1e-5):
    """Fused outputs and gradients vs the float64 reference: per-row error ≤ tol, or — where the
    float32 reference itself is worse (weight-gradient rows that cancel) — ≤ 2× its error, the rule
    FlashAttention's tests use: a kernel may not be less accurate than plain fp32 torch."""
    outs, grads = _grads_of(fn, args, kwargs, "fused")
    expected = f"cpu:{backend.active_isa()}" if has_cpu_kernel(name) and backend._C is not None else "reference"
    assert backend.last_ran[name] == expected
    assert backend.last_ran[name + "_backward"] == expected
    assert_matches_reference(fn, args, kwargs, name, outs, grads, tol)


def assert_matches_reference(fn, args, kwargs, name, outs, grads, tol=1e-5):
    """`outs` and `grads` (from any backend and device) vs the float64 reference on CPU: per-row
    error ≤ tol, or ≤ 2× the float32 reference's own error where that is worse."""
    cpu_args = tuple([a.cpu() if isinstance(a, torch.Tensor) else a for a in x] if isinstance(x, list)
                     else x.detach().cpu().requires_grad_(x.requires_grad) if isinstance(x, torch.Tensor) else x
                     for x in args)
    ref_outs, ref_grads = _grads_of(fn, _to64(cpu_args), kwargs, "reference")
    f32_outs, f32_grads = _grads_of(fn, cpu_args, kwargs, "reference")
    for kind, got, ref, f32 in (("output", outs, ref_outs, f32_outs), ("grad", grads, ref_grads, f32_grads)):
        for i, (g, r, b) in enumerate(zip(got, ref, f32, strict=True)):
            if r is None:
                assert g is None or g.abs().max() == 0, f"{name} {kind} {i}: expected no gradient"
                continue
            assert g is not None, f"{name} {kind} {i} missing"
            assert g.dtype == b.dtype, f"{name} {kind} {i}: dtype {g.dtype}, reference gives {b.dtype}"
            g, r, b = _unmask(g.cpu()), _unmask(r), _unmask(b)
            bound = max(tol, 2 * rel_err(b, r))
            assert rel_err(g, r) <= bound, f"{name} {kind} {i}: {rel_err(g, r):.3g} > {bound:.3g}"


# The ISA only changes ops that have a C++ kernel: sweep ISAs for those, run the others once.
NAME_ISA = [(name, isa) for name in CASES for isa in (ISAS if has_cpu_kernel(name) else ISAS[:1])]


@pytest.mark.parametrize("name,isa", NAME_ISA)
@pytest.mark.parametrize("s", [1, 7, 129])
def test_fused_matches_reference(name, s, isa):
    if isa is not None:
        backend._C.set_isa(isa)
    fn, args, kwargs = CASES[name](s=s)
    check_against_reference(fn, args, kwargs, name)


@pytest.mark.parametrize("s", [127, 513])
def test_long_and_odd_sequences(s):
    for case, name in ((attention_case, "attention"), (bottleneck_attention_case, "bottleneck_attention")):
        fn, args, kwargs = case(b=1, s=s)
        check_against_reference(fn, args, kwargs, name)


@pytest.mark.parametrize("mode", ["shared", "bottleneck", "full", "none"])
@pytest.mark.parametrize("norm", ["nonorm", "layernorm"])
def test_bottleneck_attention_modes(mode, norm):
    fn, args, kwargs = bottleneck_attention_case(mode=mode, norm=norm)
    check_against_reference(fn, args, kwargs, "bottleneck_attention")


def test_teacher_head_size_256():
    """The IB-BERT teacher's attention: 4 heads of 256 from the 512-wide input."""
    fn, args, kwargs = bottleneck_attention_case(s=5, hidden=512, intra=1024, heads=4, mode="full", norm="layernorm")
    check_against_reference(fn, args, kwargs, "bottleneck_attention")


@pytest.mark.parametrize("act,norm,n", [("relu", "nonorm", 4), ("gelu", "layernorm", 4), ("relu", "nonorm", 1)])
def test_ffn_stack_variants(act, norm, n):
    fn, args, kwargs = ffn_stack_case(act=act, norm=norm, n=n)
    check_against_reference(fn, args, kwargs, "ffn_stack")


@pytest.mark.parametrize("trigram,norm", [(True, "nonorm"), (False, "layernorm")])
def test_embedding_variants(trigram, norm):
    fn, args, kwargs = embedding_case(trigram=trigram, norm=norm)
    check_against_reference(fn, args, kwargs, "embedding")


def test_linear_norm_without_residual_and_bias():
    fn, args, kwargs = linear_norm_case(residual=False, norm="layernorm")
    args = (args[0], args[1], None, *args[3:])
    check_against_reference(fn, args, kwargs, "linear_norm")


@pytest.mark.parametrize("name", ["nonorm", "linear_norm", "ffn_stack"])
def test_non_contiguous_inputs(name):
    fn, args, kwargs = CASES[name](s=9)
    x = args[0].detach()
    x_nc = x.transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()  # same values, permuted strides
    assert not x_nc.is_contiguous()
    check_against_reference(fn, (x_nc, *args[1:]), kwargs, name)


def test_scores_are_masked_with_finfo_min_not_inf():
    fn, args, kwargs = attention_case(s=6)
    _, scores = fn(*args, **kwargs)
    mask = args[3]
    assert torch.isfinite(scores).all()
    assert (scores.transpose(1, 3)[~mask] == torch.finfo(scores.dtype).min).all()


def test_no_scores_buffer_unless_asked():
    fn, args, kwargs = attention_case(return_scores=False)
    _, scores = fn(*args, **kwargs)
    assert scores.numel() == 0


def captured_op_args(name, call):
    """The exact positional arguments (`save` last) that `call()` passes to op `name`'s forward op, or
    to its implementation on the direct path (`_registry._direct`)."""
    captured = {}
    opdef = OPS[name]
    real_op, real_impl = opdef.op, opdef.forward_impl

    def spy(real):
        def call_real(*a):
            captured["args"] = a
            return real(*a)
        return call_real

    opdef.op, opdef.forward_impl = spy(real_op), spy(real_impl)
    try:
        call()
    finally:
        opdef.op, opdef.forward_impl = real_op, real_impl
    return captured["args"]


def _op_args(name):
    """The custom op's exact positional arguments (the last one, `save`, true: the cases want
    gradients), recovered by calling through the public function."""
    fn, args, kwargs = CASES[name](s=5)
    return captured_op_args(name, lambda: fn(*args, **kwargs))


def _detached(op_args):
    return tuple([x.detach() if isinstance(x, torch.Tensor) else x for x in a] if isinstance(a, list)
                 else a.detach() if isinstance(a, torch.Tensor) else a for a in op_args)


def _needs(name, args):
    return [t is not None and t.is_floating_point() for t in OPS[name].tensors(args)]


# Ops whose CPU kernel keeps intermediates when asked to save (the others recompute).
SAVING = {"linear_norm", "ffn_stack", "bottleneck_attention", "embedding"}


@pytest.mark.parametrize("save", [False, True], ids=["infer", "save"])
@pytest.mark.parametrize("name", list(CASES))
def test_opcheck(name, save):
    """The forward op (saving or not) and the backward op with that forward's saved list."""
    op = OPS[name]
    *args, _ = _op_args(name)
    op_args = (*args, save)
    torch.library.opcheck(op.op, op_args)
    *outs, saved = op.op(*op_args)
    if save and name in SAVING and has_cpu_kernel(name) and backend._C is not None:
        assert saved and backend.last_ran[name] == f"cpu:{backend.active_isa()}"
    if not save:
        assert saved == []
    grads = [torch.randn_like(o) if o.numel() else o.new_empty(0) for o in outs]
    torch.library.opcheck(op.backward_op, (grads, _needs(name, args), saved, *_detached(args)))


# Tiny widths: gradcheck differentiates numerically through every input element.
TINY = {"nonorm": {"n": 8}, "layernorm": {"n": 8}, "linear_norm": {"k": 12, "n": 8},
        "attention": {"h": 2, "d": 4}, "bottleneck_attention": {"hidden": 16, "intra": 8},
        "ffn_stack": {"width": 8, "inter": 16, "n": 2}, "embedding": {"vocab": 10, "emb": 4, "hidden": 8}}


@pytest.mark.parametrize("name", list(CASES))
def test_reference_gradcheck(name):
    fn, args, kwargs = CASES[name](b=1, s=3, dtype=torch.float64, **TINY[name])
    if name == "attention":
        kwargs["return_scores"] = False

    def f(*a):
        with mbkernels.use_backend("reference"):
            return fn(*a, **kwargs)
    flat_inputs = args
    if name == "ffn_stack":
        # gradcheck takes flat tensors: check the first FFN's lists through x alone.
        def f(x):  # noqa: F811
            with mbkernels.use_backend("reference"):
                return fn(x, *args[1:], **kwargs)
        flat_inputs = (args[0],)
    assert torch.autograd.gradcheck(f, flat_inputs, eps=1e-6, atol=1e-6)


@pytest.mark.skipif(backend._C is None, reason="mbkernels._C is not built")
@pytest.mark.parametrize("isa", ISAS)
def test_fused_nonorm_gradcheck_fp64(isa):
    backend._C.set_isa(isa)
    fn, args, _ = nonorm_case(b=1, s=3, n=9, dtype=torch.float64)
    assert torch.autograd.gradcheck(fn, args)
    assert backend.last_ran["nonorm"] == f"cpu:{isa}"


def test_dropout_mask_is_a_function_of_seed_and_consistent_in_backward():
    fn, args, kwargs = linear_norm_case(dtype=torch.float64, s=4, k=16, n=8)
    seed = torch.tensor(1234)
    op_args = (*args, "nonorm", 1e-12, 0.3, seed)
    a = torch.ops.mbkernels.linear_norm(*op_args, False)[0]
    b = torch.ops.mbkernels.linear_norm(*op_args, False)[0]
    assert torch.equal(a, b)
    keep = keep_mask((2, 4, 8), 0.3, seed, 0, torch.device("cpu"))
    assert 0.55 < keep.float().mean() < 0.85
    assert torch.autograd.gradcheck(lambda x, W: torch.ops.mbkernels.linear_norm(x, W, *op_args[2:], True)[0],
                                    (args[0], args[1]))


def test_dropout_rate_and_scaling():
    x = torch.ones(200_000, dtype=torch.float64)
    y = mbkernels.ops.dropout.dropout(x, 0.1, torch.tensor(7))
    assert abs((y == 0).double().mean() - 0.1) < 0.005
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.9, dtype=torch.float64))


def test_reference_backend_bypasses_custom_ops():
    """The reference path is plain autograd: neither custom op runs (what ran says so)."""
    backend.last_ran.clear()
    fn, args, kwargs = nonorm_case()
    with mbkernels.use_backend("reference"):
        fn(*args, **kwargs).sum().backward()
    assert backend.last_ran["nonorm"] == "reference"
    assert "nonorm_backward" not in backend.last_ran


def test_fp16_on_fused_cpu_is_a_clear_error():
    fn, args, kwargs = linear_norm_case(dtype=torch.float16)
    with pytest.raises(TypeError, match="float16"):
        fn(*args, **kwargs)
    with mbkernels.use_backend("reference"):
        assert fn(*args, **kwargs).dtype == torch.float16


def test_torch_compile_has_no_graph_break_on_our_ops():
    fn, args, kwargs = bottleneck_attention_case()

    def f(*a):
        out, scores = fn(*a, **kwargs)
        return out.sum() + scores.clamp_min(-1).sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    expected = f(*args)
    got = compiled(*args)
    assert rel_err(got, expected) <= 1e-6
    got.backward()
    assert args[0].grad is not None


def test_torch_compile_traces_the_training_forwards():
    """A CPU training step of one layer under torch.compile(fullgraph): the saving forwards (whose
    saved lists come from fakes) trace and give eager's gradients."""
    from mbkernels import MobileBertConfig, MobileBertLayer
    torch.manual_seed(0)
    layer = MobileBertLayer(MobileBertConfig(num_hidden_layers=1, attention_probs_dropout_prob=0.0)).train()
    h = torch.randn(2, 9, 512, requires_grad=True)

    def step(fn):
        out = fn(h)
        out = out[0] if isinstance(out, tuple) else out
        return torch.autograd.grad(out.square().sum(), [h, *layer.parameters()])

    expected = step(layer)
    if backend._C is not None:
        for name in ("bottleneck_attention", "ffn_stack", "linear_norm"):
            assert backend.last_ran[name] == backend.last_ran[name + "_backward"] == f"cpu:{backend.active_isa()}"
    got = step(torch.compile(layer, fullgraph=True, backend="aot_eager"))
    for g, e in zip(got, expected):
        assert rel_err(g, e) <= 1e-6
