"""mbkernels benchmarks (pytest-benchmark): `pytest bench/ --benchmark-only`; see bench/README.md."""
