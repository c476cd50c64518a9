"""The int8 GEMM through mbkernels._C (pack_weights_int8 + gemm) on every int8 kernel this machine runs (each
ISA's, and its dot-product variant where it has one: NEON's sdot, AVX-512 VNNI's vpdpbusd, through SIMDe on
x86; its narrow variant for 7-bit weights: AVX2's vpmaddubsw), against `reference.int8_linear` (the
definition: fp32 row quantization, exact integer sums): shapes around the tiles, activations at MobileBERT's
scales (rows from 1e-1 to 1e7), the smoothing multipliers, the epilogues, the worst-case products that a
saturating int16 pair sum would get wrong; the run-time choice of variant; the packing's argument errors; and
objdump checks that the native kernels (AVX2, AVX-512 and VNNI here, NEON and its dot product in the aarch64
cross build) hold their vector instructions."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from mbkernels import backend
from mbkernels.ops import reference
from mbkernels.testing import rel_err

_C = pytest.importorskip("mbkernels._C", reason="mbkernels._C is not built")

ROOT = Path(__file__).resolve().parents[1]
AARCH64_BUILD = Path(os.environ.get("MBK_AARCH64_BUILD", ROOT / "build" / "aarch64"))


def _int8_isa(isa: str) -> None:
    if not any(isa == name for name in _INT8_ISAS):
        pytest.skip(f"{isa} has no int8 GEMM kernel")


def _has_int8(isa: str) -> bool:
    previous = _C.get_isa()
    _C.set_isa(isa)
    try:
        one, scale = torch.ones(1, 1, dtype=torch.int8), torch.ones(1)  # named: held over the call
        _C.pack_weights_int8(one.data_ptr(), 1, 1, scale.data_ptr(), 0, 0, 1, 1)
        return True
    except ValueError:
        return False
    finally:
        _C.set_isa(previous)


_INT8_ISAS = [isa for isa in backend.supported_isas() if _has_int8(isa)]


@pytest.fixture(params=["base", "dot", "narrow"])
def variant(request, isa):
    """The active ISA's int8 kernel of that variant; skips where the ISA or this CPU has none."""
    _int8_isa(isa)
    one, scale = torch.ones(1, 1, dtype=torch.int8), torch.ones(1)
    try:
        _C.pack_weights_int8(one.data_ptr(), 1, 1, scale.data_ptr(), 0, 0, 1, 1, request.param)
    except ValueError as e:
        pytest.skip(str(e))
    return request.param


def _weight_max(variant):
    """The largest |w| the variant's kernel takes (the narrow ones: 7-bit weights)."""
    return 63 if variant == "narrow" else 127


def _problem(m, n, k, seed, smooth=True, weight_max=127):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, k, generator=g) * torch.logspace(-1, 7, m)[:, None]
    w = torch.randint(-weight_max, weight_max + 1, (n, k), generator=g, dtype=torch.int8)
    scale = (torch.rand(n, generator=g) + 0.5) * 1e-3
    bias = torch.randn(n, generator=g)
    s = torch.rand(k, generator=g) + 0.25 if smooth else None
    return a, w, scale, bias, s


def _pack(w, scale, bias, smooth, variant="best"):
    n, k = w.shape
    return _C.pack_weights_int8(w.data_ptr(), w.stride(0), w.stride(1), scale.data_ptr(),
                                0 if smooth is None else smooth.data_ptr(), bias.data_ptr(), n, k, variant)


def _gemm(a, packed, n, act="none", residual=None, threads=2):
    c = torch.empty(a.shape[0], n)
    _C.gemm(a.data_ptr(), a.stride(0), a.shape[0], packed, c.data_ptr(), n, act,
            0 if residual is None else residual.data_ptr(), n, threads)
    return c


def test_scalar_and_the_best_isa_have_int8():
    assert "scalar" in _INT8_ISAS
    if backend.active_isa() == "avx2":
        assert "avx2" in _INT8_ISAS


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (3, 15, 3), (4, 16, 4), (5, 17, 5), (37, 130, 131),
                                   (128, 512, 128), (128, 128, 512)])
@pytest.mark.parametrize("smooth", [True, False], ids=["smooth", "plain"])
def test_int8_gemm_matches_the_definition(isa, variant, threads, m, n, k, smooth):
    a, w, scale, bias, s = _problem(m, n, k, seed=m * 1000 + n + k, smooth=smooth, weight_max=_weight_max(variant))
    packed = _pack(w, scale, bias, s, variant)
    assert packed.int8 and packed.isa == isa and re.match(r"q8(w7)?_gemm_", packed.kernel)
    got = _gemm(a, packed, n, threads=threads)
    want = reference.int8_linear(a, w, scale, bias, s)
    assert rel_err(got, want) <= 1e-6, f"{rel_err(got, want):.3g}"


def test_int8_gemm_epilogue_relu_and_residual(isa):
    _int8_isa(isa)
    a, w, scale, bias, s = _problem(29, 40, 24, seed=3)
    r = torch.randn(29, 40)
    got = _gemm(a, _pack(w, scale, bias, s), 40, act="relu", residual=r)
    want = torch.relu(reference.int8_linear(a, w, scale, bias, s)) + r
    assert rel_err(got, want) <= 1e-6


def test_int8_gemm_worst_case_products_are_exact(isa, variant):
    """|a| = 127 and |w| = the variant's largest (127, or 63 for narrow) in every product with equal
    signs: int16 pair sums of 2 * 127^2 = 32258 (2 * 255 * 63 = 32130 on u8 = a + 128 for narrow) and
    dot products of 127 * |w| * K, where a saturating kernel (vpmaddubsw on 8-bit weights) is wrong."""
    k, most = 512, _weight_max(variant)
    a = torch.full((4, k), 1e7)
    a[1, ::3] = -1e7
    w = torch.full((16, k), most, dtype=torch.int8)
    w[1::2] = -most
    got = _gemm(a, _pack(w, torch.ones(16), torch.zeros(16), None, variant), 16)
    signs = torch.where(a > 0, 1.0, -1.0).double()
    want = (signs @ torch.where(w > 0, 1.0, -1.0).double().t()) * most * 1e7
    assert torch.allclose(got.double(), want, rtol=1e-6, atol=0)


def test_int8_gemm_zero_and_nonfinite_rows(isa):
    _int8_isa(isa)
    a, w, scale, bias, _ = _problem(3, 20, 9, seed=5)
    a[0] = 0
    a[1, 4] = float("nan")
    a[2, 0] = float("inf")
    got = _gemm(a, _pack(w, scale, bias, None), 20)
    assert torch.equal(got[0], bias)
    assert got[1:].isnan().all()


@pytest.mark.parametrize("bad,message", [
    (lambda w, s: w.__setitem__((0, 1), -128), "-128"),
    (lambda w, s: w.__setitem__((0, 1), 64), "narrow"),
    (lambda w, s: s.__setitem__(1, 0.0), "scale"),
    (lambda w, s: s.__setitem__(1, float("nan")), "scale"),
])
def test_pack_weights_int8_rejects_bad_weights(bad, message):
    w = torch.ones(2, 3, dtype=torch.int8)
    s = torch.ones(2)
    bad(w, s)
    if message == "narrow":  # a weight beyond the narrow kernels' [-63, 63]
        if "avx2" not in _INT8_ISAS:
            pytest.skip("no ISA with a narrow int8 kernel")
        previous = _C.get_isa()
        _C.set_isa("avx2")
        try:
            with pytest.raises(ValueError, match=r"q8w7_gemm_5x16__avx2 takes int8 weights in \[-63, 63\], got one of "
                                                 "magnitude 64"):
                _pack(w, s, torch.zeros(2), None, "narrow")
        finally:
            _C.set_isa(previous)
        return
    with pytest.raises(ValueError, match=message):
        _pack(w, s, torch.zeros(2), None)


def test_pack_weights_int8_names_an_isa_without_int8():
    missing = [isa for isa in backend.supported_isas() if isa not in _INT8_ISAS]
    if not missing:
        pytest.skip("every supported ISA has an int8 kernel")
    previous = _C.get_isa()
    _C.set_isa(missing[0])
    try:
        with pytest.raises(ValueError, match=f"'{missing[0]}' has no int8 GEMM kernel"):
            _pack(torch.ones(2, 3, dtype=torch.int8), torch.ones(2), torch.zeros(2), None)
    finally:
        _C.set_isa(previous)


@pytest.mark.parametrize("most", [63, 127], ids=["7-bit", "8-bit"])
def test_best_variant_is_the_dot_product_else_narrow_where_the_weights_fit(isa, most):
    _int8_isa(isa)
    w, scale = torch.tensor([[1, -most]], dtype=torch.int8), torch.ones(1)
    kernels = {}
    for variant in ("base", "dot", "narrow", "best"):
        try:
            kernels[variant] = _C.pack_weights_int8(w.data_ptr(), 2, 1, scale.data_ptr(), 0, 0, 1, 2,
                                                    variant).kernel
        except ValueError:
            pass
    fallback = kernels.get("narrow", kernels["base"]) if most <= 63 else kernels["base"]
    assert kernels["best"] == kernels.get("dot", fallback)
    assert ("narrow" in kernels) == (most <= 63 and isa == "avx2")
    assert _C.int8_gemm_kernel(7 if most <= 63 else 8) == kernels["best"]  # what `mbkernels info` reports
    one = torch.ones(1, 1, dtype=torch.int8)
    with pytest.raises(ValueError, match="variant"):
        _C.pack_weights_int8(one.data_ptr(), 1, 1, scale.data_ptr(), 0, 0, 1, 1, "fast")


def _release_object(source, builds=None):
    """The object of csrc/core/gemm/<source> in a Release build tree (the Debug ones are unoptimized)."""
    for build in builds or sorted(ROOT.glob("build/*")):
        cache = build / "CMakeCache.txt"
        obj = build / "CMakeFiles" / "mbk_core.dir" / "csrc" / "core" / "gemm" / f"{source}.o"
        if obj.exists() and cache.exists() and "CMAKE_BUILD_TYPE:STRING=Release" in cache.read_text():
            return obj
    return None


def _ukernel(objdump, obj, tile, q="Q"):
    """The disassembly of the int8 microkernel ukernel_int8<V, q, tile...> in obj."""
    asm = subprocess.run([objdump, "-d", "-C", "--no-show-raw-insn", str(obj)], capture_output=True, text=True,
                         check=True).stdout
    kernels = re.findall(r"<void mbk::gemm::\(anonymous namespace\)::ukernel_int8<[^\n]*::" + q + ", "
                         + tile + r">[^\n]*>:\n(.*?)\n\n", asm, re.S)
    assert kernels, f"ukernel_int8<..., {q}, {tile}> not found in {obj}"
    return kernels[0]


def test_avx2_int8_kernel_is_vector_code():
    """The AVX2 int8 microkernels' loops multiply with vpmaddwd on ymm registers (int16 pairs), the narrow
    one's with vpmaddubsw and vpmaddwd."""
    obj, objdump = _release_object("gemm_avx2.cc"), shutil.which("objdump")
    if obj is None or objdump is None:
        pytest.skip("no Release build tree with gemm_avx2.cc.o, or no objdump")
    madds = re.findall(r"vpmaddwd\s[^\n]*%ymm", _ukernel(objdump, obj, "4, 2, 16"))
    assert len(madds) >= 8, f"expected the 4x2-vector tile's 8 vpmaddwd on ymm, found {len(madds)}"
    narrow = _ukernel(objdump, obj, "5, 2, 16", q="Q7")  # 7-bit weights: u8 x s8 pairs, then pairs of pairs
    for instruction in ("vpmaddubsw", "vpmaddwd"):
        found = re.findall(instruction + r"\s[^\n]*%ymm", narrow)
        assert len(found) >= 10, f"expected the narrow 5x2-vector tile's 10 {instruction} on ymm, found {len(found)}"


@pytest.mark.parametrize("source,instructions", [
    ("gemm_avx512.cc", [r"vpmaddwd\s[^\n]*%zmm", r"vpaddd\s[^\n]*%zmm"]),
    ("gemm_avx512_vnni.cc", [r"vpdpbusd\s[^\n]*%zmm"]),
], ids=["avx512", "avx512vnni"])
def test_avx512_int8_kernels_are_vector_code(source, instructions):
    """The native AVX-512 int8 microkernels (compiled here, whether or not this CPU runs them): the 6x64
    tile's 24 vpmaddwd + vpaddd on zmm without VNNI, its 24 vpdpbusd on zmm with."""
    obj, objdump = _release_object(source), shutil.which("objdump")
    if obj is None or objdump is None:
        pytest.skip(f"no Release build tree with {source}.o, or no objdump")
    kernel = _ukernel(objdump, obj, "6, 4, 64")
    for pattern in instructions:
        found = re.findall(pattern, kernel)
        assert len(found) >= 24, f"expected the 6x4-vector tile's 24 of {pattern}, found {len(found)}"


@pytest.mark.parametrize("source,instructions", [
    ("gemm_neon_int8.cc", ["smull", "smull2", "addp", "sadalp"]),
    ("gemm_neon_dot.cc", ["sdot"]),
], ids=["neon", "neondot"])
def test_neon_int8_kernels_are_vector_code(source, instructions):
    """The cross-built NEON int8 microkernels: the 6x16 tile's 24 sdot with the dot product, its 24 each
    of smull, smull2, addp and sadalp without."""
    obj, objdump = _release_object(source, [AARCH64_BUILD]), shutil.which("aarch64-linux-gnu-objdump")
    if obj is None or objdump is None:
        pytest.skip(f"no aarch64 Release cross build with {source}.o, or no aarch64-linux-gnu-objdump")
    kernel = _ukernel(objdump, obj, "6, 4, 16")
    for name in instructions:
        found = re.findall(rf"\t{name}\tv\d+\.4s", kernel) if name in ("sdot", "sadalp") else \
            re.findall(rf"\t{name}\tv\d+\.8h", kernel)
        assert len(found) >= 24, f"expected the 6x4-vector tile's 24 {name} on vectors, found {len(found)}"
