"""The extension as built: torch-free (`ldd` names no libtorch/libc10, so one build serves every
torch), and one OpenMP runtime in a process that imported torch and `_C` (torch's wheel bundles a
libgomp with the SONAME `libgomp.so.1`; `_C` links the system's, so the loader binds `_C` to the
runtime torch already mapped: two runtimes would mean two thread pools fighting for the cores)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mbkernels import backend

pytestmark = pytest.mark.skipif(backend._C is None, reason="mbkernels._C is not built")


def test_extension_links_no_torch():
    if shutil.which("ldd") is None:
        pytest.skip("no ldd")
    out = subprocess.run(["ldd", backend._C.__file__], capture_output=True, text=True, check=True).stdout
    for lib in ("libtorch", "libc10", "libpython"):
        assert lib not in out, f"_C links {lib}:\n{out}"
    assert "libgomp.so.1" in out or "libomp" in out  # the kernels are multithreaded


def test_one_openmp_runtime_in_the_process():
    code = ("import torch, mbkernels; from mbkernels import ops; "
            "x = torch.randn(64, 512); w = torch.randn(128, 512); v = torch.ones(128); "
            "ops.linear_norm(x, w, v, v, v); "
            "maps = [l.split()[-1] for l in open('/proc/self/maps') if 'gomp' in l or 'libomp' in l or 'iomp' in l]; "
            "print('\\n'.join(sorted(set(maps))))")
    if not Path("/proc/self/maps").exists():
        pytest.skip("no /proc")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert len(out) == 1, f"OpenMP runtimes mapped: {out}"


def test_threads_follow_torch():
    """`_C` runs on torch's thread count (one runtime: set_num_threads reaches our kernels)."""
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        from mbkernels.ops import _cpu
        assert _cpu.threads() == 1
    finally:
        torch.set_num_threads(old)
