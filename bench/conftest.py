"""pytest options, parametrization and pytest-benchmark hooks of the benchmark suite (see README.md)."""

from __future__ import annotations

import os

import pytest
import torch

from bench import cases, harness  # noqa: F401  (importing cases registers them)
from mbkernels import bench_report

SESSION = pytest.StashKey[harness.Session]()
LEVELS = ("smoke", "default", "full")


def pytest_addoption(parser):
    group = parser.getgroup("mbkernels benchmarks")
    group.addoption("--bench-full", action="store_true",
                    help="the full grid: batch {1, 8, 32} x sequence {128, 512} (or MBK_BENCH=full)")
    group.addoption("--bench-smoke", action="store_true",
                    help="every case once at the smallest size with a 2-layer model, for CI with "
                         "--benchmark-disable (or MBK_BENCH=smoke)")
    group.addoption("--bench-threads", type=int, default=None,
                    help="CPU threads for every provider (torch.set_num_threads; ORT's intra-op threads "
                         "follow); default: torch's default")
    group.addoption("--bench-compile", choices=tuple(harness.COMPILE_STYLES), default="regional",
                    help="how the torch.compile peer compiles the whole HF model: each encoder layer "
                         "(regional, default) or the model as one graph (full; minutes per shape on a small CPU)")


def level(config) -> str:
    env = os.environ.get("MBK_BENCH", "default") or "default"
    if env not in LEVELS:
        raise pytest.UsageError(f"MBK_BENCH: expected one of {LEVELS}, got {env!r}")
    smoke, full = config.getoption("bench_smoke", False), config.getoption("bench_full", False)
    if smoke and full:
        raise pytest.UsageError("--bench-smoke and --bench-full: expected at most one of them, got both")
    return "smoke" if smoke else "full" if full else env


def pytest_configure(config):
    threads = config.getoption("bench_threads", None)
    if threads is not None:
        if threads < 1:
            raise pytest.UsageError(f"--bench-threads: expected a positive count, got {threads}")
        torch.set_num_threads(threads)
    config.stash[SESSION] = harness.Session(level(config), config.getoption("bench_compile", "regional"))


def pytest_unconfigure(config):
    session = config.stash.get(SESSION, None)
    if session is not None:
        session.close()


def pytest_generate_tests(metafunc):
    if "point" in metafunc.fixturenames:
        points = harness.points(metafunc.config.stash[SESSION].level, module=cases.__name__)
        metafunc.parametrize("point", [pytest.param(p, id=f"{p[0].key}-{p[1]}") for p in points])


@pytest.fixture(scope="session")
def bench_session(request) -> harness.Session:
    return request.config.stash[SESSION]


def pytest_benchmark_update_machine_info(config, machine_info):
    session = config.stash.get(SESSION, None)
    if session is not None:
        machine_info["mbkernels"] = {**session.machine, "level": session.level,
                                     "compile_style": session.compile_style,
                                     "peaks": session.peaks if session.peaks_measured else None}


def pytest_benchmark_update_json(config, benchmarks, output_json):
    bench_report.add_ratios([b["extra_info"] for b in output_json["benchmarks"]])


def pytest_terminal_summary(terminalreporter, config):
    session = config.stash.get(SESSION, None)
    if session is None or not any("median_s" in r for r in session.results):
        return
    bench_report.add_ratios(session.results)
    title = f"mbkernels fused vs peers (peer median / fused median, {session.machine['machine']})"
    terminalreporter.write_sep("-", title)
    for line in bench_report.speedup_lines(session.results):
        terminalreporter.write_line(line)
    overhead = bench_report.overhead_lines(session.results)
    if overhead:
        terminalreporter.write_sep("-", "mbkernels call overhead (fused op - its kernel called directly, median)")
        for line in overhead:
            terminalreporter.write_line(line)
