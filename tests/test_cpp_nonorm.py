"""The C++ NoNorm CPU kernel (the op's `_C` kernel, called directly) on every ISA this machine
runs, against plain torch in float64; plus the dtype/shape errors and the ISA selection API of
mbkernels._C."""

import pytest
import torch

from mbkernels import ops
from mbkernels.ops.nonorm import NONORM

_C = pytest.importorskip("mbkernels._C", reason="mbkernels._C is not built")
KERNEL = NONORM.kernels[0]
assert KERNEL.device == "cpu"


def nonorm_forward(x, w, b, r):
    return KERNEL.forward(x, w, b, r, save=False)[0]


def nonorm_backward(g, x, w, r):
    """(grad_x, grad_weight, grad_bias); grad_x is also the residual's."""
    gx, gw, gb, _ = KERNEL.backward([g], [True] * 4, [], x, w, w, r)
    return gx, gw, gb

SHAPES = [(1, 1, 7), (2, 129, 128), (3, 5, 512), (5, 3, 129), (4, 127)]


def rel_err(out, ref):
    """max_rows ||out - ref|| / max(||ref_row||, 1e-6 max_row ||ref||) (docs/design.md "Testing rules"), rows = all
    leading dims; a 1-D tensor is one row."""
    out = out.double().reshape(-1, out.shape[-1])
    ref = ref.double().reshape(-1, ref.shape[-1])
    ref_norm = ref.norm(dim=-1)
    denom = torch.clamp(ref_norm, min=max(1e-6 * ref_norm.max().item(), 1e-300))
    return ((out - ref).norm(dim=-1) / denom).max().item()


def reference(g, x, w, b, r):
    """NoNorm forward and backward in float64 plain torch."""
    xs = x.double() + (r.double() if r is not None else 0.0)
    g64, w64 = g.double(), w.double()
    lead = tuple(range(x.dim() - 1))
    return xs * w64 + b.double(), g64 * w64, (g64 * xs).sum(lead), g64.sum(lead)


def make_inputs(shape, dtype, residual, contiguous, seed=0):
    gen = torch.Generator().manual_seed(seed)
    c = shape[-1]

    def t(*s):
        if contiguous:
            return torch.randn(*s, generator=gen, dtype=dtype)
        # Every other element of a twice-as-wide tensor: a non-unit last-dim stride.
        return torch.randn(*s[:-1], 2 * s[-1], generator=gen, dtype=dtype)[..., ::2]

    x, g = t(*shape), t(*shape)
    r = t(*shape) if residual else None
    w, b = t(c) + 1.0, t(c)
    assert contiguous == x.is_contiguous()
    return g, x, w, b, r


@pytest.fixture
def restore_isa():
    original = _C.get_isa()
    yield
    _C.set_isa(original)


@pytest.mark.parametrize("contiguous", [True, False], ids=["contig", "strided"])
@pytest.mark.parametrize("residual", [False, True], ids=["nores", "res"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_nonorm_fp32_matches_torch(isa, threads, shape, residual, contiguous):
    g, x, w, b, r = make_inputs(shape, torch.float32, residual, contiguous)
    y_ref, gx_ref, gw_ref, gb_ref = reference(g, x, w, b, r)

    y = nonorm_forward(x, w, b, r)
    gx, gw, gb = nonorm_backward(g, x, w, r)

    assert y.dtype == gx.dtype == gw.dtype == gb.dtype == torch.float32
    assert y.shape == gx.shape == x.shape and gw.shape == gb.shape == w.shape
    for name, out, ref in [("y", y, y_ref), ("grad_x", gx, gx_ref), ("grad_weight", gw, gw_ref),
                           ("grad_bias", gb, gb_ref)]:
        err = rel_err(out, ref)
        assert err <= 1e-5, f"{isa}: {name} rel err {err:.3g} > 1e-5 at shape {shape}"


@pytest.mark.parametrize("residual", [False, True], ids=["nores", "res"])
def test_nonorm_fp64(isa, residual):
    g, x, w, b, r = make_inputs((2, 33, 129), torch.float64, residual, contiguous=True)
    y_ref, gx_ref, gw_ref, gb_ref = reference(g, x, w, b, r)
    gx, gw, gb = nonorm_backward(g, x, w, r)
    for out, ref in [(nonorm_forward(x, w, b, r), y_ref), (gx, gx_ref), (gw, gw_ref),
                     (gb, gb_ref)]:
        assert out.dtype == torch.float64
        assert rel_err(out, ref) <= 1e-12


def test_backward_deterministic(isa, threads):
    g, x, w, _, r = make_inputs((8, 250, 129), torch.float32, residual=True, contiguous=True)
    first = nonorm_backward(g, x, w, r)
    for _ in range(5):
        again = nonorm_backward(g, x, w, r)
        for a, b in zip(first, again):
            assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_dtypes_not_taken_by_the_kernel(dtype):
    """The C++ kernel takes float32/float64 only: bfloat16 runs the reference, float16 is refused by
    the fused CPU backend with a message that names it."""
    g, x, w, b, _ = make_inputs((2, 3, 8), dtype, residual=False, contiguous=True)
    assert not KERNEL.supports(x, w, b, None)
    if dtype == torch.float16:
        with pytest.raises(TypeError, match="float16"):
            ops.nonorm(x, w, b)
    else:
        assert ops.nonorm(x, w, b).dtype == dtype


def test_bad_arguments_named():
    """Arguments are validated once, by the op, before any kernel sees them."""
    x, w, b = torch.randn(2, 8), torch.randn(8), torch.randn(8)
    with pytest.raises(ValueError, match=r"nonorm: weight: expected shape \(8,\)"):
        ops.nonorm(x, torch.randn(7), b)
    with pytest.raises(ValueError, match=r"nonorm: bias: expected shape \(8,\)"):
        ops.nonorm(x, w, torch.randn(9))
    with pytest.raises(ValueError, match=r"nonorm: residual: expected shape \(2, 8\)"):
        ops.nonorm(x, w, b, torch.randn(2, 7))
    with pytest.raises(TypeError, match=r"nonorm: weight: expected torch.float32"):
        ops.nonorm(x, w.double(), b)
    with pytest.raises(RuntimeError, match="shape"):  # autograd's own check of a gradient's shape
        ops.nonorm(x.requires_grad_(), w, b).backward(torch.randn(3, 8))


def test_isa_api(restore_isa):
    compiled, supported = _C.compiled_isas(), _C.supported_isas()
    assert "scalar" in supported and set(supported) <= set(compiled)
    assert _C.best_isa() in supported and _C.get_isa() in supported
    with pytest.raises(ValueError, match="bogus"):
        _C.set_isa("bogus")
    for name in set(compiled) - set(supported):
        with pytest.raises(ValueError, match="cannot run"):
            _C.set_isa(name)
    _C.set_isa("scalar")
    assert _C.get_isa() == "scalar"
