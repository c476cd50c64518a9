"""The Triton kernels against the float64 reference: forward and every gradient, odd sizes, masks,
dropout masks bit for bit, and no B×H×S×S buffer in attention unless scores are asked for.

Runs on CPU tensors under the Triton interpreter or on CUDA. The interpreter must be chosen before
Triton is imported, so CI runs this file in its own pytest process:

    TRITON_INTERPRET=1 python -m pytest -q tests/test_triton.py
"""

from __future__ import annotations

import os

import pytest
import torch
from op_cases import (attention_case, bottleneck_attention_case, embedding_case, ffn_stack_case, layernorm_case,
                      linear_norm_case, nonorm_case)
from test_ops import _flat, _grads_of, assert_matches_reference, captured_op_args

import mbkernels
from mbkernels import backend
from mbkernels.ops import OPS
from mbkernels.triton import available

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
pytestmark = pytest.mark.skipif(
    not (available() and (INTERPRET or torch.cuda.is_available())),
    reason="needs Triton with TRITON_INTERPRET=1 set before import, or CUDA")

DEVICE = "cuda" if torch.cuda.is_available() and not INTERPRET else "cpu"


def _to_device(args):
    def conv(a):
        if isinstance(a, list):
            return [conv(x) for x in a]
        if isinstance(a, torch.Tensor):
            return a.detach().to(DEVICE).requires_grad_(a.requires_grad)
        return a
    return tuple(conv(a) for a in args)


def check_triton(fn, args, kwargs, name, tol=1e-5, backward=True):
    """Triton outputs and gradients vs the float64 reference: per-row error ≤ tol, or ≤ 2× the
    float32 reference's own error where that is worse (tests/test_ops.py's rule)."""
    args = _to_device(args)
    outs, grads = _grads_of(fn, args, kwargs, "triton")
    assert backend.last_ran[name] == "triton"
    if backward:
        assert backend.last_ran[name + "_backward"] == "triton"
    assert_matches_reference(fn, args, kwargs, name, outs, grads, tol)
    return outs, grads


# ---------------------------------------------------------------- nonorm, layernorm

@pytest.mark.parametrize("case,name", [(nonorm_case, "nonorm"), (layernorm_case, "layernorm")])
@pytest.mark.parametrize("s,n,residual", [(1, 16, True), (7, 100, True), (33, 64, False)])
def test_norm(case, name, s, n, residual):
    fn, args, kwargs = case(b=2, s=s, n=n, residual=residual)
    check_triton(fn, args, kwargs, name)


def test_norm_non_contiguous():
    fn, args, kwargs = layernorm_case(b=3, s=5, n=48)
    x = args[0].detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    assert not x.is_contiguous()
    check_triton(fn, (x, *args[1:]), kwargs, "layernorm")


# ---------------------------------------------------------------- linear_norm

@pytest.mark.parametrize("norm", ["nonorm", "layernorm"])
@pytest.mark.parametrize("s,k,n,residual,bias", [(1, 64, 16, True, True), (7, 40, 100, True, False),
                                                  (9, 64, 64, False, True)])
def test_linear_norm(norm, s, k, n, residual, bias):
    fn, args, kwargs = linear_norm_case(b=2, s=s, k=k, n=n, norm=norm, residual=residual)
    if not bias:
        args = (args[0], args[1], None, *args[3:])
    check_triton(fn, args, kwargs, "linear_norm")


def _op(name, *args):
    """The custom op called directly (with an explicit seed), outputs as the public function's."""
    *out, _ = getattr(torch.ops.mbkernels, name)(*args, torch.is_grad_enabled())
    return out[0] if len(out) == 1 else tuple(out)


def _triton_kernel(name):
    return next(k for k in OPS[name].kernels if k.device == "triton")


def _linear_norm_dropout(x, weight, bias, norm_weight, norm_bias, residual, norm="nonorm", eps=1e-12,
                         dropout_p=0.0, seed=None):
    """linear_norm with an explicit seed, so the reference and the kernel draw the same mask."""
    from mbkernels.ops import reference
    if backend.current_backend() == "reference":
        return reference.linear_norm(x, weight, bias, norm_weight, norm_bias, residual, norm, eps, dropout_p, seed)
    return _op("linear_norm", x, weight, bias, norm_weight, norm_bias, residual, norm, eps, dropout_p, seed)


@pytest.mark.parametrize("norm", ["nonorm", "layernorm"])
def test_linear_norm_dropout_matches_reference_mask(norm):
    _, args, kwargs = linear_norm_case(b=2, s=5, k=32, n=48, norm=norm)
    kwargs.update(dropout_p=0.3, seed=torch.tensor(123456789, dtype=torch.int64))
    outs, _ = check_triton(_linear_norm_dropout, args, kwargs, "linear_norm")
    # The mask really drops: some outputs differ from the no-dropout ones.
    with mbkernels.use_backend("triton"):
        plain = _linear_norm_dropout(*_to_device(args), norm=norm, eps=kwargs["eps"])
    assert not torch.allclose(outs[0], plain)


def test_dropout_hash_bit_for_bit():
    """The Triton keep mask equals ops/dropout.keep_mask for seeds with the high bit set, p edges."""
    from mbkernels.ops.dropout import keep_mask
    from mbkernels.triton import nonorm as tnorm
    for seed, p in ((0, 0.1), (2**31 - 2, 0.5), (987654321, 0.9)):
        seed_t = torch.tensor(seed, dtype=torch.int64)
        n = 37
        dy = torch.ones(3, n, device=DEVICE)
        x = torch.zeros(3, n, device=DEVICE)
        w = torch.ones(n, device=DEVICE)
        *_, dxd = tnorm.norm_backward(dy, x, w, None, False, 0.0, dropout=(p, seed_t, 0))
        keep = keep_mask((3, n), p, seed_t, 0, torch.device("cpu"))
        assert torch.equal(dxd.cpu() != 0, keep)
        for stream in (1, 2):
            assert not torch.equal(keep, keep_mask((3, n), p, seed_t, stream, torch.device("cpu")))


def _rel(got, want):
    from mbkernels.testing import rel_err
    return rel_err(got.double().cpu(), want.double().cpu())


@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_gemm_epilogues(act):
    """matmul's epilogue (bias, activation, stored pre-activation; the derivative at it; an added
    tensor) on a transposed operand, against float64 torch."""
    from mbkernels.triton import gemm
    g = torch.Generator().manual_seed(4)
    a = torch.randn(70, 37, generator=g).to(DEVICE)
    bt = torch.randn(50, 70, generator=g).to(DEVICE)  # b = btᵀ, read through its strides
    bias = torch.randn(50, generator=g).to(DEVICE)
    pre = torch.empty(37, 50, device=DEVICE)
    c = gemm.matmul(a.t(), bt.t(), bias=bias, act=act, pre=pre)
    want_pre = a.double().t() @ bt.double().t() + bias.double()
    want = torch.relu(want_pre) if act == "relu" else torch.nn.functional.gelu(want_pre)
    assert _rel(pre, want_pre) < 1e-6 and _rel(c, want) < 1e-6
    x = want_pre.requires_grad_()
    act_out = torch.relu(x) if act == "relu" else torch.nn.functional.gelu(x)
    dy = torch.randn(37, 40, generator=g, dtype=torch.float64)
    w = torch.randn(40, 50, generator=g, dtype=torch.float64)
    (want_grad,) = torch.autograd.grad(act_out, x, dy @ w)
    got = gemm.matmul(dy.float().to(DEVICE), w.float().to(DEVICE), act_grad_at=pre, act_grad=act)
    assert _rel(got, want_grad) < 1e-6
    added = gemm.matmul(dy.float().to(DEVICE), w.float().to(DEVICE), add=pre)
    assert _rel(added, dy @ w + want_pre) < 1e-6


def test_nan_propagates_like_torch():
    """A NaN in one token's input gives NaN exactly where the reference puts it (ReLU keeps NaN, as
    torch's does; a GPU's max would drop it), forward through ffn_stack, whose every FFN has a ReLU."""
    fn, args, kwargs = ffn_stack_case(b=2, s=3, width=16, inter=32, n=2)
    x = args[0].detach().clone()
    x[1, 2, 5] = float("nan")
    with mbkernels.use_backend("triton"), torch.no_grad():
        got = fn(*_to_device((x, *args[1:])), **kwargs)
    with mbkernels.use_backend("reference"), torch.no_grad():
        want = fn(x, *args[1:], **kwargs)
    assert torch.equal(got.cpu().isnan(), want.isnan()) and want.isnan().any()


def test_gemm_split_reduction_is_exact_and_deterministic():
    """A weight gradient split over the token axis (as on a GPU) sums its fp32 partials in a fixed
    order: equal to the unsplit result within fp32 rounding, and bit-identical run to run."""
    from mbkernels.triton import gemm
    g = torch.Generator().manual_seed(5)
    dy = torch.randn(300, 24, generator=g).to(DEVICE)
    x = torch.randn(300, 40, generator=g).to(DEVICE)
    whole, db_whole = gemm.matmul(dy.t(), x, row_sums=True, splits=1)
    split, db_split = gemm.matmul(dy.t(), x, row_sums=True, splits=3)
    again, db_again = gemm.matmul(dy.t(), x, row_sums=True, splits=3)
    want = dy.double().t() @ x.double()
    assert _rel(whole, want) < 1e-6 and _rel(split, want) < 1e-6
    assert _rel(db_split, dy.double().sum(0)) < 1e-6 and _rel(db_whole, dy.double().sum(0)) < 1e-6
    assert torch.equal(split, again) and torch.equal(db_split, db_again)


# ---------------------------------------------------------------- ffn_stack

@pytest.mark.parametrize("s,width,inter,n,act,norm", [(7, 32, 64, 4, "relu", "nonorm"), (1, 48, 80, 2, "gelu", "layernorm"),
                                                      (33, 16, 64, 1, "relu", "layernorm")])
def test_ffn_stack(s, width, inter, n, act, norm):
    fn, args, kwargs = ffn_stack_case(b=2, s=s, width=width, inter=inter, n=n, act=act, norm=norm)
    check_triton(fn, args, kwargs, "ffn_stack")


def _ffn_stack_seeded(x, w1, b1, w2, b2, nw, nb, act="relu", norm="nonorm", eps=(), dropout_p=0.0, seed=None):
    from mbkernels.ops import reference
    if backend.current_backend() == "reference":
        return reference.ffn_stack(x, w1, b1, w2, b2, nw, nb, act, norm, eps, dropout_p, seed)
    return _op("ffn_stack", x, w1, b1, w2, b2, nw, nb, act, norm, list(eps), dropout_p, seed)


def test_ffn_stack_dropout_matches_reference_mask():
    _, args, kwargs = ffn_stack_case(b=2, s=5, width=32, inter=64, n=2)
    kwargs.update(dropout_p=0.3, seed=torch.tensor(777, dtype=torch.int64))
    check_triton(_ffn_stack_seeded, args, kwargs, "ffn_stack")


def test_ffn_stack_wider_than_the_fused_kernel():
    """Rows wider than the fused kernel's register tile (the teacher's 1024) run as GEMM + tiled
    linear_norm, forward and backward on Triton, two FFNs, the last one's dropout mask as the reference's."""
    from mbkernels.triton import ffn_stack as tffn
    _, args, kwargs = ffn_stack_case(b=1, s=3, width=640, inter=96, n=2, act="gelu", norm="layernorm")
    assert args[0].shape[-1] > tffn.MAX_WIDTH
    kwargs.update(act="gelu", norm="layernorm", dropout_p=0.3, seed=torch.tensor(4242, dtype=torch.int64))
    check_triton(_ffn_stack_seeded, args, kwargs, "ffn_stack")


# ---------------------------------------------------------------- attention

@pytest.mark.parametrize("s,d,masked,return_scores", [(1, 16, True, True), (7, 32, True, True),
                                                      (33, 64, True, False), (9, 32, False, True)])
def test_attention(s, d, masked, return_scores):
    fn, args, kwargs = attention_case(b=2, h=2, s=s, d=d, masked=masked, return_scores=return_scores)
    outs, _ = check_triton(fn, args, kwargs, "attention")
    if return_scores and masked:
        mask = args[3]
        assert torch.isfinite(outs[1]).all()
        assert (outs[1].cpu().transpose(1, 3)[~mask] == torch.finfo(outs[1].dtype).min).all()


def test_attention_fully_masked_row_is_uniform():
    fn, args, kwargs = attention_case(b=2, h=1, s=5, d=16)
    mask = args[3].clone()
    mask[1] = False
    check_triton(fn, (*args[:3], mask), kwargs, "attention")


def test_attention_head_size_256():
    fn, args, kwargs = attention_case(b=1, h=1, s=5, d=256, return_scores=False)
    check_triton(fn, args, kwargs, "attention")


def _attention_seeded(q, k, v, key_mask=None, dropout_p=0.0, seed=None, return_scores=False):
    from mbkernels.ops import reference
    if backend.current_backend() == "reference":
        return reference.attention(q, k, v, key_mask, dropout_p, seed, return_scores)
    return _op("attention", q, k, v, key_mask, dropout_p, seed, return_scores)


def test_attention_dropout_matches_reference_mask():
    _, args, kwargs = attention_case(b=2, h=2, s=9, d=16)
    kwargs.update(dropout_p=0.25, seed=torch.tensor(2**31 - 5, dtype=torch.int64))
    check_triton(_attention_seeded, args, kwargs, "attention")


def test_attention_unsupported_head_size_falls_back():
    fn, args, kwargs = attention_case(b=1, h=1, s=3, d=24)
    with mbkernels.use_backend("triton"):
        fn(*_to_device(args), **kwargs)
    assert backend.last_ran["attention"] == "reference"


class _Allocations(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the shape and size in bytes of every tensor any torch op produces inside the block
    (the interpreter's own byte views of the kernel arguments included)."""

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple[tuple[int, ...], int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (list, tuple)) else (out,)):
            if isinstance(t, torch.Tensor):
                self.shapes.append((tuple(t.shape), t.numel() * t.element_size()))
        return out


@pytest.mark.parametrize("return_scores", [False, True])
def test_attention_allocates_no_scores_buffer_unless_asked(return_scores):
    """Every tensor torch allocates on the Triton path (the forward adapter and the backward adapter,
    i.e. what runs inside the custom ops) is recorded; none may hold B·H·S·S elements unless scores
    were asked for — and when they are, the detector must see that buffer (a positive control)."""
    b, h, s, d = 2, 2, 33, 16  # D < S: q, k, v, o are smaller than one S×S map
    _, args, _ = attention_case(b=b, h=h, s=s, d=d)
    q, k, v, mask = (a.detach() for a in _to_device(args))
    kernel = _triton_kernel("attention")
    rec = _Allocations()
    with mbkernels.use_backend("triton"), rec:
        ctx, scores, saved = kernel.forward(q, k, v, mask, 0.0, None, return_scores, save=True)
        grads = [torch.ones_like(ctx), torch.ones_like(scores) if return_scores else ctx.new_empty(0)]
        kernel.backward(grads, [True, True, True, False, False], saved, q, k, v, mask, 0.0, None, return_scores)
    big = [shape for shape, nbytes in rec.shapes if nbytes >= b * h * s * s * q.element_size()]
    assert rec.shapes, "the recorder saw nothing"
    if return_scores:
        assert (b, h, s, s) in big
    else:
        assert big == [], f"S×S-sized allocations without return_scores: {big}"


# ---------------------------------------------------------------- bottleneck_attention

@pytest.mark.parametrize("mode,norm,s,return_scores", [("shared", "nonorm", 7, True), ("shared", "layernorm", 1, True),
                                                       ("bottleneck", "nonorm", 9, True), ("full", "layernorm", 5, True),
                                                       ("none", "nonorm", 7, False)])
def test_bottleneck_attention(mode, norm, s, return_scores):
    fn, args, kwargs = bottleneck_attention_case(b=2, s=s, hidden=64, intra=32, heads=2, mode=mode, norm=norm,
                                                 return_scores=return_scores)
    check_triton(fn, args, kwargs, "bottleneck_attention")


@pytest.mark.parametrize("mode,norm", [("full", "layernorm"), ("shared", "nonorm")])
def test_bottleneck_attention_wide_heads_of_256(mode, norm):
    """Projections wider than linear_norm's fused tile (the teacher's mode "full", heads of 256):
    tiled GEMMs, the norms of the normed groups as a second pass, forward and every gradient."""
    fn, args, kwargs = bottleneck_attention_case(b=1, s=3, hidden=32, intra=768, heads=3, mode=mode, norm=norm)
    check_triton(fn, args, kwargs, "bottleneck_attention")


def _bottleneck_attention_seeded(h, key_mask, *weights, num_heads=2, mode="shared", norm="nonorm", eps=1e-12,
                                 attn_dropout_p=0.0, hidden_dropout_p=0.0, seed=None, return_scores=False):
    from mbkernels.ops import reference
    args = (h, key_mask, *weights, num_heads, mode, norm, eps, attn_dropout_p, hidden_dropout_p, seed, return_scores)
    if backend.current_backend() == "reference":
        return reference.bottleneck_attention(*args)
    return _op("bottleneck_attention", *args)


def test_bottleneck_attention_dropout_matches_reference_masks():
    """Attention dropout (stream 0) and hidden dropout (stream 1) from one seed, as the reference."""
    _, args, kwargs = bottleneck_attention_case(b=2, s=7, hidden=64, intra=32, heads=2)
    kwargs.update(attn_dropout_p=0.2, hidden_dropout_p=0.3, seed=torch.tensor(31337, dtype=torch.int64))
    check_triton(_bottleneck_attention_seeded, args, kwargs, "bottleneck_attention")


@pytest.mark.parametrize("return_scores", [False, True])
def test_bottleneck_attention_allocates_no_scores_buffer_unless_asked(return_scores):
    """What runs inside the op, forward and backward, allocates nothing of B·H·S·S elements or more
    unless scores were asked for (then the recorder must see that buffer)."""
    b, heads, s = 2, 2, 65  # every activation and concatenated weight is smaller than one B·H·S·S map
    _, args, kwargs = bottleneck_attention_case(b=b, s=s, hidden=64, intra=32, heads=heads)
    h, mask, *weights = (a.detach() if isinstance(a, torch.Tensor) else a for a in _to_device(args))
    kernel = _triton_kernel("bottleneck_attention")
    rest = (heads, "shared", "nonorm", 1e-12, 0.0, 0.0, None, return_scores)
    rec = _Allocations()
    with mbkernels.use_backend("triton"), rec:
        out, scores, saved = kernel.forward(h, mask, *weights, *rest, save=True)
        grads = [torch.ones_like(out), torch.ones_like(scores) if return_scores else out.new_empty(0)]
        kernel.backward(grads, [True, False, *[True] * len(weights), False], saved, h, mask, *weights, *rest)
    big = [shape for shape, nbytes in rec.shapes if nbytes >= b * heads * s * s * h.element_size()]
    assert backend.last_ran["bottleneck_attention"] == "triton"
    if return_scores:
        assert (b, heads, s, s) in big
    else:
        assert big == [], f"S×S-sized allocations without return_scores: {big}"


# ---------------------------------------------------------------- embedding

@pytest.mark.parametrize("s,trigram,norm", [(7, True, "nonorm"), (1, True, "layernorm"), (9, False, "nonorm")])
def test_embedding(s, trigram, norm):
    fn, args, kwargs = embedding_case(b=2, s=s, vocab=40, emb=16, hidden=64, trigram=trigram, norm=norm)
    ids = args[0].clone()
    ids[1, -2:] = 0  # padding tokens: padding_idx 0 gets no gradient
    check_triton(fn, (ids, *args[1:]), kwargs, "embedding")


def test_embedding_from_inputs_embeds():
    fn, args, kwargs = embedding_case(b=2, s=6, vocab=40, emb=16, hidden=64)
    g = torch.Generator().manual_seed(8)
    embeds = torch.randn(2, 6, 16, generator=g).requires_grad_()
    check_triton(fn, (None, embeds, *args[2:]), kwargs, "embedding")


def _embedding_seeded(*args, padding_idx=None, trigram=True, norm="nonorm", eps=1e-5, dropout_p=0.0, seed=None):
    from mbkernels.ops import reference
    full = (*args, padding_idx, trigram, norm, eps, dropout_p, seed)
    if backend.current_backend() == "reference":
        return reference.embedding(*full)
    return _op("embedding", *full)


def test_embedding_dropout_matches_reference_mask():
    _, args, kwargs = embedding_case(b=2, s=5, vocab=40, emb=16, hidden=64)
    kwargs.update(dropout_p=0.25, seed=torch.tensor(4242, dtype=torch.int64))
    check_triton(_embedding_seeded, args, kwargs, "embedding")


# ---------------------------------------------------------------- dtypes, layouts, packaging

BF16_CASES = {
    "nonorm": lambda: nonorm_case(b=2, s=5, n=48, dtype=torch.bfloat16),
    "layernorm": lambda: layernorm_case(b=2, s=5, n=48, dtype=torch.bfloat16),
    "linear_norm": lambda: linear_norm_case(b=2, s=5, k=64, n=32, dtype=torch.bfloat16, norm="layernorm"),
    "attention": lambda: attention_case(b=2, h=2, s=9, d=32, dtype=torch.bfloat16),
    "ffn_stack": lambda: ffn_stack_case(b=2, s=5, width=32, inter=64, n=2, dtype=torch.bfloat16),
    "bottleneck_attention": lambda: bottleneck_attention_case(b=2, s=5, hidden=64, intra=32, heads=2,
                                                              dtype=torch.bfloat16),
    "embedding": lambda: embedding_case(b=2, s=5, vocab=40, emb=16, hidden=64),
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", list(BF16_CASES))
def test_half_precision(name, dtype):
    """bf16 / fp16 in and out, fp32 math inside (the interpreter's bf16 tl.dot is bypassed by
    upcasting): within 2e-2 of the float64 reference, or 2× the same-dtype reference's own error."""
    fn, args, kwargs = BF16_CASES[name]()
    args = tuple([t.detach().to(dtype).requires_grad_() for t in a] if isinstance(a, list)
                 else a.detach().to(dtype).requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point()
                 else a for a in args)
    check_triton(fn, args, kwargs, name, tol=2e-2)


@pytest.mark.parametrize("name", ["linear_norm", "ffn_stack", "bottleneck_attention"])
def test_autocast_runs_bf16_kernels_with_fp32_master_weights(name):
    """Under torch.autocast the op casts its fp32 inputs to bf16 (register_autocast), the bf16
    kernels run (the very ones test_half_precision checks against the reference: same bits), and the fp32
    leaves get fp32 gradients."""
    from mbkernels.ops.autocast import REGISTERED
    if not REGISTERED:
        pytest.skip("torch < 2.5 has no torch.library.register_autocast")
    fn, args, kwargs = {"linear_norm": lambda: linear_norm_case(b=2, s=5, k=64, n=32),
                        "ffn_stack": lambda: ffn_stack_case(b=2, s=5, width=32, inter=64, n=2),
                        "bottleneck_attention": lambda: bottleneck_attention_case(b=2, s=5, hidden=64, intra=32,
                                                                                  heads=2)}[name]()
    args = _to_device(args)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        outs, grads = _grads_of(fn, args, kwargs, "triton")
    assert backend.last_ran[name] == "triton" and backend.last_ran[name + "_backward"] == "triton"
    assert outs[0].dtype == torch.bfloat16
    assert all(g is None or g.dtype == torch.float32 for g in grads)
    bf16_args = tuple([t.detach().bfloat16().requires_grad_() for t in a] if isinstance(a, list)
                      else a.detach().bfloat16().requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point()
                      else a for a in args)
    _, bf16_grads = _grads_of(fn, bf16_args, kwargs, "triton")
    for got, want in zip(grads, bf16_grads, strict=True):  # the same bf16 kernels ran, cast back to fp32
        assert (got is None) == (want is None) and (got is None or torch.equal(got, want.float()))


@pytest.mark.parametrize("name", ["nonorm", "linear_norm", "attention", "ffn_stack", "embedding"])
def test_empty_batch(name):
    """B = 0: the Triton path runs forward and backward (no zero-sized launch) and returns empty results."""
    fn, args, kwargs = {"nonorm": lambda: nonorm_case(b=0, s=5, n=16),
                        "linear_norm": lambda: linear_norm_case(b=0, s=5, k=32, n=16),
                        "attention": lambda: attention_case(b=0, h=2, s=5, d=16, masked=False),
                        "ffn_stack": lambda: ffn_stack_case(b=0, s=5, width=16, inter=32, n=2),
                        "embedding": lambda: embedding_case(b=0, s=5, vocab=20, emb=16, hidden=32)}[name]()
    args = _to_device(args)
    leaves = [t for t in _flat(args) if isinstance(t, torch.Tensor) and t.requires_grad]
    with mbkernels.use_backend("triton"):
        out = fn(*args, **kwargs)
        out = out[0] if isinstance(out, tuple) else out
        grads = torch.autograd.grad(out, leaves, torch.ones_like(out), allow_unused=True)
    assert out.numel() == 0 and backend.last_ran[name] == backend.last_ran[name + "_backward"] == "triton"
    assert all(g is None or not g.any() for g in grads)


@pytest.mark.parametrize("preset", ["mobilebert", "mobilebert_tiny", "mobilebert_no_opt"])
def test_encoder_op_runs_every_layer_on_triton(preset):
    """ops.encoder (all layers as one op, inference) through the Triton kernels equals the float64
    reference of the same layers (per-row error ≤ 1e-5, or 2× the fp32 reference's)."""
    from helpers import padded_batch, small

    from mbkernels import MobileBertConfig, MobileBertModel, ops
    from mbkernels.testing import rel_err
    config = small(getattr(MobileBertConfig, preset)())
    torch.manual_seed(0)
    model = MobileBertModel(config).eval()
    ids, types, mask = padded_batch(config, batch=2, seq=7)
    with torch.no_grad(), mbkernels.use_backend("reference"):
        h = model.embeddings(ids, types)
    c, key_mask = model.config, mask.bool()

    def run(dtype, be, device):
        weights = [t.detach().to(device, dtype) for layer in model.encoder.layer
                   for t in layer.encoder_weights(h.new_empty(0))]
        with mbkernels.use_backend(be), torch.no_grad():
            return ops.encoder(h.to(device, dtype), key_mask.to(device), weights, c.num_hidden_layers,
                               c.num_attention_heads, c.attention_mode, c.norm, c.hidden_act, c.layer_norm_eps,
                               [c.layer_norm_eps] * (c.num_feedforward_networks - 1) + [1e-5], c.use_bottleneck)

    got = run(torch.float32, "triton", DEVICE)
    assert backend.last_ran["encoder"] == "triton"
    ref, f32 = run(torch.float64, "reference", "cpu"), run(torch.float32, "reference", "cpu")
    assert rel_err(got.cpu(), ref) <= max(1e-5, 2 * rel_err(f32, ref))


def test_attention_non_contiguous_heads():
    """[B, S, H, D] projections viewed as [B, H, S, D] (how the model splits heads)."""
    fn, args, kwargs = attention_case(b=2, h=2, s=7, d=16)
    q, k, v = (a.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_() for a in args[:3])
    assert not q.is_contiguous()
    check_triton(fn, (q, k, v, args[3]), kwargs, "attention")


@pytest.mark.slow
def test_every_kernel_compiles_for_sm90():
    """The GPU compiler (ptxas included) accepts every specialization the ops launch, in fp32, bf16
    and fp16: the interpreter never compiles, so this is the check that the CUDA path builds."""
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "triton_sm90_compile.py")],
                          check=False, capture_output=True, text=True, env=env, timeout=1800)
    assert done.returncode == 0 and "for sm_90" in done.stdout, done.stderr[-3000:]


def _recording_backend(seen: list[str]):
    """A torch.compile backend that runs AOT autograd without codegen (so our custom ops and their
    backward ops are what runs) and records the call targets of its forward and backward graphs."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    def record(gm, _):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return make_boxed_func(gm.forward)
    return aot_autograd(fw_compiler=record, bw_compiler=record)


def test_compiled_layer_of_our_ops_is_one_graph():
    """A MobileBERT layer as its three ops (bottleneck_attention → ffn_stack → linear_norm), forward
    and backward under torch.compile(fullgraph=True) with the Triton kernels inside: no graph break,
    all three ops in the graph, the same values as eager."""
    from mbkernels import ops
    _, att_args, att_kw = bottleneck_attention_case(b=2, s=7, hidden=64, intra=32, heads=2, return_scores=False)
    _, ffn_args, ffn_kw = ffn_stack_case(b=2, s=7, width=32, inter=64, n=2)
    _, ln_args, ln_kw = linear_norm_case(b=2, s=7, k=32, n=64)
    h, mask, *att_w = _to_device(att_args)
    ffn_w = _to_device(ffn_args)[1:]
    out_w = _to_device(ln_args)[1:5]

    def layer(h):
        a, _ = ops.bottleneck_attention(h, mask, *att_w, **att_kw)
        a = ops.ffn_stack(a, *ffn_w, **ffn_kw)
        return ops.linear_norm(a, *out_w, residual=h, **ln_kw)

    def out_and_grad(f):
        out = f(h)
        (dh,) = torch.autograd.grad((out ** 2).sum(), [h])  # the compiled backward graph, if f is compiled
        return out, dh

    seen: list[str] = []
    with mbkernels.use_backend("triton"):
        eager = out_and_grad(layer)
        torch._dynamo.reset()
        compiled = out_and_grad(torch.compile(layer, fullgraph=True, backend=_recording_backend(seen)))
    for name in ("bottleneck_attention", "ffn_stack", "linear_norm"):
        assert {f"mbkernels.{name}.default", f"mbkernels.{name}_backward.default"} <= set(seen)
        assert backend.last_ran[name + "_backward"] == "triton"
    for got, want in zip(compiled, eager, strict=True):
        assert _rel(got, want) < 1e-6


def test_compiled_model_has_no_graph_break_and_matches_eager():
    """torch.compile(fullgraph=True) of a whole MobileBertModel training step with the Triton kernels
    inside the custom ops: one graph (fullgraph raises on any break), our ops in it, the same output
    and gradients as eager (aot_eager: the graph machinery without Inductor's codegen)."""
    from helpers import padded_batch, small

    from mbkernels import MobileBertConfig, MobileBertModel
    config = small(MobileBertConfig.mobilebert(), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = MobileBertModel(config).to(DEVICE).train()
    ids, types, mask = (t.to(DEVICE) for t in padded_batch(config, batch=2, seq=8))
    seen: list[str] = []

    def forward(m):
        return m(ids, token_type_ids=types, attention_mask=mask).last_hidden_state

    def step(f):
        out = f(model)
        weight = model.encoder.layer[0].ffn[0].intermediate.dense.weight
        (grad,) = torch.autograd.grad((out ** 2).mean(), [weight])  # the compiled backward, if f is compiled
        return out, grad

    with mbkernels.use_backend("triton"):
        eager_out, eager_grad = step(forward)
        torch._dynamo.reset()
        out, grad = step(torch.compile(forward, fullgraph=True, backend=_recording_backend(seen)))
    assert backend.last_ran["bottleneck_attention_backward"] == "triton"
    assert {"mbkernels.ffn_stack.default", "mbkernels.bottleneck_attention_backward.default"} <= set(seen)
    assert torch.equal(out, eager_out) and torch.allclose(grad, eager_grad, rtol=1e-5, atol=1e-7)


def test_package_imports_without_triton():
    """`import mbkernels` never imports Triton, and with Triton missing the ops run the reference."""
    import subprocess
    import sys
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch, mbkernels\n"
            "from mbkernels.triton import available\n"
            "assert not available()\n"
            "from mbkernels.ops._registry import OPS\n"
            "x = torch.randn(2, 8); w = torch.ones(8); b = torch.zeros(8)\n"
            "assert not any(k.supports(x, w, b, None, 1e-5) for k in OPS['layernorm'].kernels\n"
            "               if k.device == 'triton')\n"
            "print('ok')\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]
    done = subprocess.run([sys.executable, "-c", "import mbkernels, sys; assert 'triton' not in sys.modules"],
                          check=False, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


OPCHECK_CASES = {
    "nonorm": lambda: nonorm_case(b=2, s=3, n=16),
    "layernorm": lambda: layernorm_case(b=2, s=3, n=16),
    "linear_norm": lambda: linear_norm_case(b=2, s=3, k=32, n=16, norm="layernorm"),
    "attention": lambda: attention_case(b=1, h=2, s=5, d=16),
    "ffn_stack": lambda: ffn_stack_case(b=1, s=3, width=16, inter=32, n=2),
    "bottleneck_attention": lambda: bottleneck_attention_case(b=1, s=3, hidden=32, intra=32, heads=2),
    "embedding": lambda: embedding_case(b=1, s=3, vocab=20, emb=16, hidden=32),
}


@pytest.mark.parametrize("name", list(OPCHECK_CASES))
def test_opcheck_on_triton(name):
    """torch.library.opcheck of the op and its backward op with the Triton kernels running inside."""
    fn, args, kwargs = OPCHECK_CASES[name]()
    args = _to_device(args)
    op = OPS[name]

    def call():
        with mbkernels.use_backend("triton"):
            fn(*args, **kwargs)

    *op_args, save = captured_op_args(name, call)
    with mbkernels.use_backend("triton"):
        torch.library.opcheck(op.op, (*op_args, save))
        assert backend.last_ran[name] == "triton"
        *outs, saved = op.op(*op_args, save)
        assert saved == []  # the Triton kernels recompute
        grads = [torch.randn_like(o) if o.numel() else o.new_empty(0) for o in outs]
        needs = [t is not None and t.is_floating_point() for t in op.tensors(op_args)]
        detached = tuple(a.detach() if isinstance(a, torch.Tensor)
                         else [t.detach() for t in a] if isinstance(a, list) and a and isinstance(a[0], torch.Tensor)
                         else a for a in op_args)
        torch.library.opcheck(op.backward_op, (grads, needs, saved, *detached))
        assert backend.last_ran[name + "_backward"] == "triton"


def test_realistic_scale_activations():
    """MobileBERT's stream reaches 1e7 in a few channels and more at [CLS]: the per-row error holds
    for the norms and for linear_norm's residual path at that scale (fp32)."""
    g = torch.Generator().manual_seed(1)
    chans = torch.randperm(64, generator=g)[:4]
    for case, name in ((nonorm_case, "nonorm"), (layernorm_case, "layernorm")):
        fn, args, kwargs = case(b=2, s=5, n=64)
        x = args[0].detach().clone()
        x[..., chans] *= 2e6
        x[:, 0] *= 30
        check_triton(fn, (x.requires_grad_(), *args[1:]), kwargs, name)
    fn, args, kwargs = linear_norm_case(b=2, s=5, k=32, n=64, norm="nonorm")
    r = args[5].detach().clone()
    r[..., chans] *= 2e6
    r[:, 0] *= 30
    check_triton(fn, (*args[:5], r.requires_grad_()), kwargs, "linear_norm")


@pytest.mark.parametrize("norm,dropout_p", [("nonorm", 0.0), ("layernorm", 0.3)])
def test_linear_norm_wider_than_one_tile(norm, dropout_p):
    """N > MAX_N: the GEMM tiled over columns (bias, dropout, residual), the norm a second pass."""
    from mbkernels.triton import linear_norm as tlin
    _, args, kwargs = linear_norm_case(b=1, s=3, k=48, n=600, norm=norm)
    assert args[1].shape[0] > tlin.MAX_N and args[1].shape[0] % tlin.TILE_N != 0
    kwargs.update(dropout_p=dropout_p, seed=torch.tensor(99, dtype=torch.int64))
    check_triton(_linear_norm_dropout, args, kwargs, "linear_norm")


def test_linear_norm_wider_than_the_norm_kernel_falls_back():
    """N > the norm kernel's 8192: the reference runs, and says so."""
    from mbkernels.triton import nonorm as tnorm
    fn, args, kwargs = linear_norm_case(b=1, s=2, k=16, n=tnorm.MAX_N + 8)
    with mbkernels.use_backend("triton"):
        fn(*_to_device(args), **kwargs)
    assert backend.last_ran["linear_norm"] == "reference"


def test_norm_backward_is_deterministic():
    """dgamma/dbeta come from per-program partial sums reduced in a fixed order: same bits every run."""
    from mbkernels.triton import nonorm as tnorm
    g = torch.Generator().manual_seed(2)
    x, dy = (torch.randn(67, 40, generator=g).to(DEVICE) for _ in range(2))
    w = torch.randn(40, generator=g).to(DEVICE)
    first = tnorm.norm_backward(dy, x, w, None, True, 1e-5)
    second = tnorm.norm_backward(dy, x, w, None, True, 1e-5)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_teacher_layer_runs_on_triton():
    """A one-layer IB-BERT-shaped teacher (mode "full", 768 inside, heads of 256, LayerNorm, GELU,
    one FFN): every op of the layer runs its Triton kernels forward and backward, and the output and
    every parameter gradient match the float64 reference (per-row error ≤ 1e-5, or 2× fp32's)."""
    from helpers import padded_batch

    from mbkernels import MobileBertConfig, MobileBertModel
    from mbkernels.testing import rel_err
    config = MobileBertConfig.ib_bert_large(num_hidden_layers=1, vocab_size=50, hidden_size=64, embedding_size=32,
                                            intra_bottleneck_size=768, num_attention_heads=3, intermediate_size=96,
                                            max_position_embeddings=16, hidden_dropout_prob=0.0,
                                            attention_probs_dropout_prob=0.0)
    assert config.attention_mode == "full" and config.attention_head_size == 256
    torch.manual_seed(0)
    model = MobileBertModel(config).train()
    ids, types, mask = padded_batch(config, batch=1, seq=3)

    def run(dtype, be, device):
        m = MobileBertModel(config).to(device, dtype).train()
        m.load_state_dict(model.state_dict())
        with mbkernels.use_backend(be):
            out = m(ids.to(device), token_type_ids=types.to(device), attention_mask=mask.to(device)).last_hidden_state
            (out.double() ** 2).mean().backward()
        return {"output": out.detach().cpu(), **{n: p.grad.cpu() for n, p in m.named_parameters()}}

    got = run(torch.float32, "triton", DEVICE)
    for op in ("bottleneck_attention", "ffn_stack", "linear_norm"):
        assert backend.last_ran[op] == "triton" and backend.last_ran[op + "_backward"] == "triton", op
    ref, f32 = run(torch.float64, "reference", "cpu"), run(torch.float32, "reference", "cpu")
    assert got.keys() == ref.keys()
    for name, g in got.items():
        if name.endswith("key.bias"):  # zero by the softmax's shift invariance: only rounding is left
            assert g.norm() <= 1e-5 * got[name.replace("key", "query")].norm(), name
            continue
        assert rel_err(g, ref[name]) <= max(1e-5, 2 * rel_err(f32[name], ref[name])), name
