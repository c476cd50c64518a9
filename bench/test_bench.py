"""Every registered case x mode x device x dtype x size x provider (bench/cases.py): one benchmark each."""

import pytest

from bench import harness


def test_bench(benchmark, bench_session, point, request):
    spec, provider = point
    reason = harness.skip_reason(spec, provider)
    if reason is not None:
        pytest.skip(reason)
    harness.run(benchmark, bench_session, spec, provider,
                max_time=float(request.config.getoption("benchmark_max_time")),
                min_rounds=int(request.config.getoption("benchmark_min_rounds")))
