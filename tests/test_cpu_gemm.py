"""The packed-weight GEMM ops on CPU (linear_norm and ffn_stack forward through mbkernels._C) on
every ISA this machine runs, against the float64 reference: token counts around the tiles, odd
widths, non-contiguous inputs, both norms and both activations, 1 and 2 threads; the packed-weight
cache (a second inference call never repacks; in-place writes and new tensors are seen); the
fallbacks to the reference (fp64, bf16, dropout) and the argument errors, named once by the op."""

import pytest
import torch

import mbkernels
from mbkernels import backend, ops
from mbkernels.ops import _packed
from mbkernels.ops import reference
from mbkernels.testing import rel_err

_C = pytest.importorskip("mbkernels._C", reason="mbkernels._C is not built")

TOKENS = [1, 7, 127, 129, 513]
TOL = 1e-5


def _lin(n_out, n_in, g, bias=True):
    w = torch.randn(n_out, n_in, generator=g) * n_in ** -0.5
    return w, (torch.randn(n_out, generator=g) * 0.1 if bias else None)


def _norm_params(n, g):
    return 1 + 0.1 * torch.randn(n, generator=g), 0.1 * torch.randn(n, generator=g)


def _f64(*ts):
    return [None if t is None else [u.double() for u in t] if isinstance(t, list) else t.double() for t in ts]


def _linear_norm_inputs(tokens, k, n, residual=True, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    w, b = _lin(n, k, g, bias)
    nw, nb = _norm_params(n, g)
    x = torch.randn(2, tokens, k, generator=g) if tokens > 1 else torch.randn(1, k, generator=g)
    r = torch.randn(*x.shape[:-1], n, generator=g) if residual else None
    return x, w, b, nw, nb, r


def _check_linear_norm(x, w, b, nw, nb, r, norm, isa):
    eps = 1e-5 if norm == "layernorm" else 1e-12
    with torch.inference_mode():
        y = ops.linear_norm(x, w, b, nw, nb, r, norm=norm, eps=eps)
    assert backend.last_ran["linear_norm"] == f"cpu:{isa}"
    ref = reference.linear_norm(*_f64(x, w, b, nw, nb, r), norm, eps)
    assert y.dtype == torch.float32 and y.shape == ref.shape
    assert rel_err(y, ref) <= TOL, f"{rel_err(y, ref):.3g}"


@pytest.mark.parametrize("norm", ["nonorm", "layernorm"])
@pytest.mark.parametrize("tokens", TOKENS)
def test_linear_norm_mobilebert_widths(isa, tokens, norm):
    """The FFN output (512 -> 128) and the output bottleneck (128 -> 512) shapes."""
    for k, n in ((512, 128), (128, 512)):
        _check_linear_norm(*_linear_norm_inputs(tokens, k, n, seed=tokens), norm, isa)


@pytest.mark.parametrize("residual,bias", [(True, True), (False, False), (True, False)])
@pytest.mark.parametrize("norm", ["nonorm", "layernorm"])
@pytest.mark.parametrize("tokens", [1, 7, 129])
def test_linear_norm_odd_widths(isa, threads, tokens, norm, residual, bias):
    """Widths that are no multiple of any tile or vector: every edge path of the microkernels."""
    _check_linear_norm(*_linear_norm_inputs(tokens, 131, 77, residual, bias, seed=1), norm, isa)


@pytest.mark.parametrize("norm", ["nonorm", "layernorm"])
def test_linear_norm_non_contiguous(isa, norm):
    x, w, b, nw, nb, r = _linear_norm_inputs(127, 96, 80, seed=2)
    sliced = torch.randn(2, 127, 101)[..., :96].copy_(x)         # row stride 101: used in place
    permuted = x.transpose(0, 1).contiguous().transpose(0, 1)    # no single row stride: copied
    r_sliced = torch.randn(2, 127, 90)[..., :80].copy_(r)
    w_t = w.t().contiguous().t()                                 # transposed weight storage
    for xi, ri, wi in ((sliced, r_sliced, w), (permuted, r, w_t), (x, r.transpose(0, 1).contiguous().transpose(0, 1), w)):
        assert not (xi.is_contiguous() and ri.is_contiguous() and wi.is_contiguous())
        _check_linear_norm(xi, wi, b, nw, nb, ri, norm, isa)


def _ffn_inputs(tokens, width, inter, n=4, seed=0, batch=2):
    g = torch.Generator().manual_seed(seed)
    l1 = [_lin(inter, width, g) for _ in range(n)]
    l2 = [_lin(width, inter, g) for _ in range(n)]
    norms = [_norm_params(width, g) for _ in range(n)]
    x = torch.randn(batch, tokens, width, generator=g)
    return x, [w for w, _ in l1], [b for _, b in l1], [w for w, _ in l2], [b for _, b in l2], \
        [w for w, _ in norms], [b for _, b in norms]


def _check_ffn(args, act, norm, isa):
    eps = [1e-12] * (len(args[1]) - 1) + [1e-5]
    with torch.inference_mode():
        y = ops.ffn_stack(*args, act=act, norm=norm, eps=eps)
    assert backend.last_ran["ffn_stack"] == f"cpu:{isa}"
    ref = reference.ffn_stack(*_f64(*args), act, norm, eps)
    assert rel_err(y, ref) <= TOL, f"{rel_err(y, ref):.3g}"


@pytest.mark.parametrize("act,norm", [("relu", "nonorm"), ("gelu", "layernorm"), ("relu", "layernorm"),
                                      ("gelu", "nonorm")])
@pytest.mark.parametrize("tokens", TOKENS)
def test_ffn_stack_mobilebert_widths(isa, tokens, act, norm):
    _check_ffn(_ffn_inputs(tokens, 128, 512, batch=1 if tokens > 129 else 2, seed=tokens), act, norm, isa)


@pytest.mark.parametrize("n_ffn", [1, 4])
def test_ffn_stack_odd_widths_and_strides(isa, threads, n_ffn):
    x, *rest = _ffn_inputs(65, 37, 70, n=n_ffn, seed=3)
    _check_ffn((x, *rest), "gelu", "layernorm", isa)
    permuted = x.transpose(0, 1).contiguous().transpose(0, 1)
    _check_ffn((permuted, *rest), "relu", "nonorm", isa)


def _stats():
    return _packed.stats()


@pytest.mark.parametrize("mode", ["inference_mode", "no_grad"])
def test_second_inference_call_does_not_repack(mode):
    x, w, b, nw, nb, r = _linear_norm_inputs(16, 128, 64)
    fx, *ffn = _ffn_inputs(16, 32, 48)
    ctx = torch.inference_mode if mode == "inference_mode" else torch.no_grad
    with ctx():
        if mode == "inference_mode":  # weights that are themselves inference tensors
            w, b, ffn = w.clone(), b.clone(), [[t.clone() for t in ts] for ts in ffn]
        y1 = ops.linear_norm(x, w, b, nw, nb, r)
        f1 = ops.ffn_stack(fx, *ffn)
        before = _stats()
        y2 = ops.linear_norm(x, w, b, nw, nb, r)
        f2 = ops.ffn_stack(fx, *ffn)
        after = _stats()
    assert after["packs"] == before["packs"], (before, after)
    assert after["hits"] == before["hits"] + 2  # one lookup per op call: its weights, prepared
    assert torch.equal(y1, y2) and torch.equal(f1, f2)


@pytest.mark.parametrize("kind", ["normal", "inference"])
def test_in_place_weight_update_is_seen(kind):
    """An in-place write repacks: seen through the version counter on a normal tensor, through the
    sampled fingerprint on an inference tensor (which has no version counter)."""
    x, w, b, nw, nb, r = _linear_norm_inputs(9, 64, 48)
    if kind == "inference":
        with torch.inference_mode():
            w = w.clone()
    with torch.inference_mode():
        ops.linear_norm(x, w, b, nw, nb, r)
    packs = _stats()["packs"]
    with torch.inference_mode() if kind == "inference" else torch.no_grad():
        w.mul_(-0.5)
    with torch.inference_mode():
        y = ops.linear_norm(x, w, b, nw, nb, r)
    assert _stats()["packs"] == packs + 1
    assert rel_err(y, reference.linear_norm(*_f64(x, w, b, nw, nb, r))) <= TOL


def test_new_tensor_at_a_reused_address_is_not_stale():
    """Freed weights' addresses get reused by the allocator: the cache must not hand back their
    packing for a different tensor."""
    x, _, b, nw, nb, r = _linear_norm_inputs(5, 64, 32)
    g = torch.Generator().manual_seed(7)
    for _ in range(4):
        w = torch.randn(32, 64, generator=g)
        with torch.inference_mode():
            y = ops.linear_norm(x, w, b, nw, nb, r)
        assert rel_err(y, reference.linear_norm(*_f64(x, w, b, nw, nb, r))) <= TOL
        del w, y


def test_clear_packed_weights():
    x, w, b, nw, nb, r = _linear_norm_inputs(3, 32, 16)
    with torch.inference_mode():
        ops.linear_norm(x, w, b, nw, nb, r)
        _packed.clear()
        assert _stats()["entries"] == 0
        packs = _stats()["packs"]
        ops.linear_norm(x, w, b, nw, nb, r)
    assert _stats()["packs"] == packs + 1 and _stats()["entries"] == 1


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_dtypes_run_the_reference(dtype):
    x, w, b, nw, nb, r = (t.to(dtype) for t in _linear_norm_inputs(7, 64, 32))
    fx, *ffn = _ffn_inputs(7, 32, 48)
    ffn = [[t.to(dtype) for t in ts] for ts in ffn]
    with torch.inference_mode():
        ops.linear_norm(x, w, b, nw, nb, r)
        ops.ffn_stack(fx.to(dtype), *ffn)
    assert backend.last_ran["linear_norm"] == "reference"
    assert backend.last_ran["ffn_stack"] == "reference"


def test_dropout_runs_the_reference():
    x, w, b, nw, nb, r = _linear_norm_inputs(7, 64, 32)
    ops.linear_norm(x, w, b, nw, nb, r, dropout_p=0.1)
    assert backend.last_ran["linear_norm"] == "reference"
    ops.linear_norm(x, w, b, nw, nb, r)
    assert backend.last_ran["linear_norm"] == f"cpu:{_C.get_isa()}"


def test_argument_errors_named_once_by_the_op():
    """Validation happens once, in the op (`_arguments.py`), before any kernel sees the arguments."""
    x, w, b, nw, nb, r = _linear_norm_inputs(7, 64, 32)
    with pytest.raises(TypeError, match=r"linear_norm: weight: expected torch.float64"):
        ops.linear_norm(x.double(), w, b, nw, nb, r)
    with pytest.raises(ValueError, match=r"linear_norm: weight: expected shape \(\*, 64\)"):
        ops.linear_norm(x, w[:, :63], b, nw, nb, r)
    with pytest.raises(ValueError, match=r"linear_norm: residual: expected shape"):
        ops.linear_norm(x, w, b, nw, nb, r[..., :31])
    with pytest.raises(ValueError, match=r"linear_norm: norm: expected one of \('nonorm', 'layernorm'\)"):
        ops.linear_norm(x, w, b, nw, nb, r, norm="batchnorm")
    fx, w1, b1, w2, b2, fnw, fnb = _ffn_inputs(3, 32, 48, n=2)
    with pytest.raises(ValueError, match="output_weights expected 2 entries"):
        ops.ffn_stack(fx, w1, b1, w2[:1], b2, fnw, fnb, "relu", "nonorm", [1e-12, 1e-12])
    with pytest.raises(ValueError, match=r"output_weights\[1\]: expected shape"):
        ops.ffn_stack(fx, w1, b1, [w2[0], w2[1][:, :47]], b2, fnw, fnb, "relu", "nonorm", [1e-12, 1e-12])
    with pytest.raises(ValueError, match=r"act: expected one of \('relu', 'gelu'\)"):
        ops.ffn_stack(fx, w1, b1, w2, b2, fnw, fnb, "tanh", "nonorm", [1e-12, 1e-12])


def test_gemm_kernel_names_tile_and_isa(isa):
    name = _C.gemm_kernel()
    # XNNPACK-style names: the ISA suffix is a C identifier (avx512-simde's is avx512_simde).
    assert name.startswith("f32_gemm_") and name.endswith(f"__{isa.replace('-', '_')}")
