"""The benchmark harness itself (bench/, mbkernels/flops.py, mbkernels/bench_report.py): FLOP counts
against torch's counter, the grid and the case registry, skips without CUDA / ONNX Runtime, the FMA
peak binding, and report generation from a saved sample. No timing is asserted anywhere."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mbkernels import MobileBertConfig, MobileBertLayer, MobileBertModel, bench_report, flops, use_backend
from mbkernels.cli import main as cli_main

from conftest import requires_C
from helpers import small
from op_cases import (attention_case, bottleneck_attention_case, embedding_case, ffn_stack_case, linear_norm_case,
                      nonorm_case)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ is a package at the repository root
    sys.path.insert(0, str(ROOT))
from bench import harness  # noqa: E402

SAMPLE = Path(__file__).with_name("data") / "bench_sample.json"


def counted(fn, train: bool) -> int:
    """Torch's FLOP count of fn() on the reference path (custom ops would count as zero), and of the
    backward of its outputs when `train`."""
    with use_backend("reference"), FlopCounterMode(display=False) as counter:
        outs = fn()
        if train:
            outs = [o for o in (outs if isinstance(outs, (tuple, list)) else (outs,)) if o is not None and o.numel()]
            torch.autograd.backward(outs, [torch.randn_like(o) for o in outs])
    return counter.get_total_flops()


def expected(forward: int, train: bool) -> int:
    return flops.training(forward) if train else forward


# -- FLOP counts --------------------------------------------------------------------------------------

OP_FLOPS = [
    ("nonorm", lambda: nonorm_case(2, 7, 128), flops.nonorm(2, 7, 128)),
    ("linear_norm", lambda: linear_norm_case(2, 7, 512, 128), flops.linear_norm(14, 512, 128)),
    ("attention", lambda: attention_case(2, 4, 7, 32), flops.attention(2, 4, 7, 32)),
    *[(f"bottleneck_attention-{mode}", lambda mode=mode: bottleneck_attention_case(2, 7, 256, 64, 2, mode=mode),
       flops.bottleneck_attention(2, 7, 256, 64, 2, mode)) for mode in ("shared", "bottleneck", "full", "none")],
    ("ffn_stack", lambda: ffn_stack_case(2, 7, 128, 512, 4), flops.ffn_stack(14, 128, 512, 4)),
    ("embedding-trigram", lambda: embedding_case(2, 7, 50, 32, 128, trigram=True), flops.embedding(14, 32, 128, True)),
    ("embedding-plain", lambda: embedding_case(2, 7, 50, 32, 128, trigram=False), flops.embedding(14, 32, 128, False)),
]


@pytest.mark.parametrize("train", [False, True], ids=["forward", "train"])
@pytest.mark.parametrize("name,build,forward", OP_FLOPS, ids=[c[0] for c in OP_FLOPS])
def test_op_flops_match_torch_counter(name, build, forward, train):
    fn, args, kwargs = build()
    assert counted(lambda: fn(*args, **kwargs), train) == expected(forward, train)


PRESETS = {
    "mobilebert": MobileBertConfig.mobilebert(),
    "tiny": MobileBertConfig.mobilebert_tiny(),
    "no_opt": MobileBertConfig.mobilebert_no_opt(),
    "ib_bert": MobileBertConfig.ib_bert_large(intra_bottleneck_size=256, intermediate_size=512),
    "no_bottleneck_pooler": MobileBertConfig(use_bottleneck=False, hidden_size=128, embedding_size=128,
                                             trigram_input=False, classifier_activation=True),
}


@pytest.mark.parametrize("train", [False, True], ids=["forward", "train"])
@pytest.mark.parametrize("preset", list(PRESETS))
def test_layer_and_model_flops_match_torch_counter(preset, train):
    config = dataclasses.replace(small(PRESETS[preset]), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    b, s = 2, 9
    model = MobileBertModel(config).train(train)
    ids = torch.randint(1, config.vocab_size, (b, s))

    def forward():
        out = model(ids)
        return out.last_hidden_state, out.pooler_output  # both: the pooler's dense (if any) gets a gradient

    assert counted(forward, train) == expected(flops.model(config, b, s), train)

    layer = MobileBertLayer(config).train(train)
    h = torch.randn(b, s, config.hidden_size, requires_grad=True)
    assert counted(lambda: layer(h)[0], train) == expected(flops.layer(config, b, s), train)


def test_flops_of_the_default_model_are_plausible():
    """MobileBERT's ~21M non-embedding GEMM weights → ~2 FLOPs per weight per token (+ attention)."""
    c = MobileBertConfig.mobilebert()
    per_token = flops.model(c, 1, 128) / 128
    assert 40e6 < per_token < 60e6
    with pytest.raises(ValueError, match="mode"):
        flops.bottleneck_attention(1, 8, 512, 128, 4, mode="bogus")


# -- the grid, the registry, skips --------------------------------------------------------------------

def test_grid_levels_and_providers():
    import bench.cases  # noqa: F401  (registers the cases)

    assert set(harness.CASES) >= {"nonorm", "linear_norm", "bottleneck_attention", "attention", "ffn_stack",
                                  "embedding", "layer", "model"}
    everything = [harness.points(level) for level in ("smoke", "default", "full")]
    # The call-overhead cases time one tiny fp32 CPU inference point at every level.
    overhead = [[(s, p) for s, p in pts if harness.CASES[s.case].kind == "overhead"] for pts in everything]
    assert {s.case for s, _ in overhead[0]} == {f"overhead_{op}" for op in (
        "nonorm", "layernorm", "linear_norm", "bottleneck_attention", "attention", "ffn_stack", "embedding",
        "encoder")}
    for pts in overhead:
        assert {(s.batch, s.seq, s.device, s.dtype, s.mode) for s, _ in pts} == {(1, 8, "cpu", "fp32", "infer")}
        assert {p for _, p in pts} == {"fused", "kernel"}
    # The fine-tuning step has its own sizes at every level; the smoke level takes its first only.
    step = [[(s, p) for s, p in pts if s.case == "finetune_step"] for pts in everything]
    assert {(s.batch, s.seq, s.device, s.dtype, s.mode) for s, _ in step[0]} == {
        (1, 128, d, "fp32", "train") for d in ("cpu", "cuda")}
    for pts in step[1:]:
        assert {(s.batch, s.seq) for s, _ in pts} == {(1, 128), (8, 128), (32, 64)}
        assert {p for _, p in pts} == {"fused", "hf", "compile"}
    smoke, default, full = ([(s, p) for s, p in pts if harness.CASES[s.case].sizes is None] for pts in everything)
    assert {(s.batch, s.seq) for s, _ in smoke} == {(1, 128)}
    assert {(s.batch, s.seq) for s, _ in default} == {(1, 128), (8, 128)}
    assert {(s.batch, s.seq) for s, _ in full} == {(b, s) for b in (1, 8, 32) for s in (128, 512)}
    for spec, provider in full:
        if provider == "ort":
            assert (spec.device, spec.dtype, spec.mode) in {("cpu", d, "infer") for d in ("fp32", "int8", "int8w7")}
        if spec.device == "cpu" and spec.mode == "train":
            assert spec.dtype == "fp32"
    assert {p for s, p in smoke if s.case == "model"} == set(harness.MODULE_PROVIDERS)
    assert {p for s, p in smoke if s.case == "attention"} == {*harness.OP_PROVIDERS, "sdpa"}
    assert {(s.device, s.dtype) for s, _ in smoke} == {("cpu", "fp32"), ("cpu", "bf16"), ("cuda", "fp32"),
                                                        ("cuda", "bf16"), ("cuda", "fp16"), ("cpu", "int8"),
                                                        ("cpu", "int8w7")}
    # int8 (8- and 7-bit weights) is CPU inference, and only for the cases that list it: the GEMM ops
    # against their reference (the int8 definition), the model against ONNX Runtime's int8 at 3 sizes.
    for dtype in ("int8", "int8w7"):
        assert {s.case for s, _ in full if s.dtype == dtype} == {"linear_norm", "ffn_stack"}
        assert {(s.device, s.mode, p) for s, p in full if s.dtype == dtype} == {("cpu", "infer", "fused"),
                                                                                 ("cpu", "infer", "reference")}
        model_int8 = [(s, p) for s, p in everything[1] if s.case == "model_int8" and s.dtype == dtype]
        assert {(s.batch, s.seq) for s, _ in model_int8} == {(1, 128), (8, 128), (32, 128)}
        assert {(s.device, s.mode, p) for s, p in model_int8} == {("cpu", "infer", "fused"), ("cpu", "infer", "ort")}
    keys = [f"{s.key}-{p}" for s, p in everything[2]]
    assert len(keys) == len(set(keys))


def test_adding_a_case_is_one_function():
    @harness.case("test_only_step", kind="step", providers=("fused",), modes=("train",), devices=("cpu",))
    def step_case(spec):
        x = torch.ones(3, requires_grad=True)
        step = lambda: (x * 2).sum().backward()  # noqa: E731  (a complete step: the harness adds nothing)
        return harness.Workload(flops=0, providers={"fused": harness.Provider(lambda: step)})

    try:
        pts = [(s, p) for s, p in harness.points("smoke") if s.case == "test_only_step"]
        assert [(s.mode, s.device, s.dtype, p) for s, p in pts] == [("train", "cpu", "fp32", "fused")]
        workload = step_case(pts[0][0])
        workload.providers["fused"].prepare()()
        with pytest.raises(ValueError, match="registered twice"):
            harness.case("test_only_step", kind="step", providers=("fused",))(step_case)
        with pytest.raises(ValueError, match="providers"):
            harness.case("test_bad", kind="op", providers=("nope",))
    finally:
        harness.CASES.pop("test_only_step", None)


def _spec(**kw) -> harness.Spec:
    return harness.Spec(**{"case": "model", "mode": "infer", "device": "cpu", "dtype": "fp32", "batch": 1, "seq": 128,
                           **kw})


def test_skip_reasons(monkeypatch):
    import bench.cases  # noqa: F401

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "CUDA" in harness.skip_reason(_spec(device="cuda"), "fused")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now fails
    assert "onnxruntime is not installed" in harness.skip_reason(_spec(), "ort")
    assert harness.skip_reason(_spec(), "fused") is None
    monkeypatch.setattr(harness, "cpu_has_native_bf16", lambda: False)
    assert "bf16" in harness.skip_reason(_spec(dtype="bf16"), "fused")


def test_suite_skips_cleanly_without_cuda_and_onnxruntime(tmp_path):
    """The real suite, in a process where CUDA is hidden and onnxruntime cannot be imported: those
    points skip with a reason that names what is missing, nothing fails."""
    code = ("import sys; sys.modules['onnxruntime'] = None; import pytest; "
            "sys.exit(pytest.main(sys.argv[1:]))")
    args = ["bench/", "--bench-smoke", "--benchmark-disable", "-q", "-rs", "-p", "no:cacheprovider",
            "-k", "model-infer-cpu-fp32-1x128-ort or nonorm-infer-cuda-fp32-1x128-fused"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "2 skipped" in out and "failed" not in out, out
    assert "onnxruntime is not installed" in out and "CUDA is not available" in out, out


# -- the FMA peak -------------------------------------------------------------------------------------

@requires_C
def test_fma_peak_binding():
    from mbkernels import _C

    assert _C.fma_peak_gflops(1, 0.02) > 0
    with pytest.raises(ValueError, match="threads"):
        _C.fma_peak_gflops(0, 0.1)
    with pytest.raises(ValueError, match="seconds"):
        _C.fma_peak_gflops(1, 0.0)


@requires_C
def test_int8_peak_binding():
    """The int8 dot-product loop runs for both weight widths and checks its arguments (its rate is
    the bench's business: measured on Zen 3, 1.5x the fp32 FMA rate with int16 pairs, 1.9x with 7-bit
    weights)."""
    from mbkernels import _C

    for bits in (7, 8):
        assert _C.int8_peak_gops(1, 0.02, bits) > 0
    with pytest.raises(ValueError, match="weight_bits must be 7 or 8, got 6"):
        _C.int8_peak_gops(1, 0.1, 6)
    with pytest.raises(ValueError, match="threads"):
        _C.int8_peak_gops(0, 0.1)


# -- the report ---------------------------------------------------------------------------------------

def test_report_from_sample_json(tmp_path):
    written = [Path(p) for p in _run_report([str(SAMPLE), "--out", str(tmp_path), "--name", "sample"])]
    md = tmp_path / "sample.md"
    assert md in written
    text = md.read_text()
    for heading in ("## Machine", "## Headline", "### Latency", "### Throughput", "### Speedup",
                    "### Preparation", "### Training step memory"):
        assert heading in text, heading
    assert "ONNX Runtime" in text and "torch.compile" in text and "HF eager" in text
    pngs = [p for p in written if p.suffix == ".png"]
    assert {p.name for p in pngs} >= {"sample-latency-cpu-fp32-infer.png", "sample-speedup-cpu-fp32.png"}
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
        assert f"]({p.name})" in text


def _run_report(argv: list[str]) -> list[str]:
    """`mbkernels bench-report ...` through the CLI; returns the paths it printed."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli_main(["bench-report", *argv]) == 0
    return buf.getvalue().split()


def test_ratios_come_from_the_same_point():
    recs = [{"point": "p", "provider": "fused", "median_s": 1.0}, {"point": "p", "provider": "hf", "median_s": 3.0},
            {"point": "q", "provider": "hf", "median_s": 5.0}, {"point": "p", "provider": "ort", "median_s": None}]
    bench_report.add_ratios(recs)
    assert recs[0]["ratios"] == {"hf": 3.0}
    assert recs[1]["ratios"] == {"fused": pytest.approx(1 / 3)}
    assert recs[2]["ratios"] == {} and "ratios" not in recs[3]


def test_report_rejects_files_without_results(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"benchmarks": []}))
    with pytest.raises(ValueError, match="no mbkernels benchmark results"):
        bench_report.load([empty])
    with pytest.raises(SystemExit):
        bench_report.main([str(tmp_path / "missing.json")])


def test_overhead_rows_subtract_the_kernel_from_the_fused_op(tmp_path):
    def rec(provider, median, **kw):
        return {"point": "overhead_nonorm-infer-cpu-fp32-1x8", "case": "overhead_nonorm", "kind": "overhead",
                "provider": provider, "median_s": median, "device": "cpu", "dtype": "fp32", "mode": "infer",
                "batch": 1, "seq": 8, **kw}

    recs = bench_report.add_ratios([rec("fused", 30e-6, ran={"nonorm": "cpu:avx2"}), rec("kernel", 4e-6)])
    (row,) = bench_report.overhead_rows(recs)
    assert row["op"] == "nonorm" and row["fused_us"] == pytest.approx(30)
    assert row["kernel_us"] == pytest.approx(4) and row["overhead_us"] == pytest.approx(26)
    assert bench_report.speedup_lines(recs) == []  # overhead points stay out of the peer tables
    bench_report.write_report(recs, {"machine": "m"}, tmp_path, "m")
    text = (tmp_path / "m.md").read_text()
    assert "## Call overhead per op" in text and "| nonorm | 1×8 | 30.0 | 4.0 | 26.0 | nonorm=cpu:avx2 |" in text
