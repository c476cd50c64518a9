"""use_backend, the MBK_BACKEND / MBK_ISA environment defaults, and what info() reports."""

import json
import os
import subprocess
import sys

import pytest
import torch

import mbkernels
from mbkernels import backend

from conftest import requires_C


def _info_in_subprocess(**env):
    code = "import json, mbkernels; print(json.dumps(mbkernels.info()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return json.loads(out.stdout)


def test_env_backend_default():
    d = _info_in_subprocess(MBK_BACKEND="reference")
    assert d["backend"] == "reference"
    assert all(v["cpu"] == "reference (backend)" for v in d["ops"].values())


@requires_C
def test_env_isa_default():
    assert _info_in_subprocess(MBK_ISA="scalar")["active_isa"] == "scalar"


def test_bad_backend_name():
    with pytest.raises(ValueError, match="backend.*'bogus'"):
        with mbkernels.use_backend("bogus"):
            pass


@requires_C
def test_use_backend_isa_is_scoped_and_bad_isa_is_a_value_error():
    before = backend.active_isa()
    with mbkernels.use_backend(isa="scalar"):
        assert backend.active_isa() == "scalar"
        x = torch.randn(3, 8)
        mbkernels.ops.nonorm(x, torch.ones(8), torch.zeros(8))
        assert backend.last_ran["nonorm"] == "cpu:scalar"
    assert backend.active_isa() == before
    with pytest.raises(ValueError, match="bogus"):
        with mbkernels.use_backend(isa="bogus"):
            pass
    assert backend.active_isa() == before


@pytest.mark.skipif(backend.TRITON_INTERPRET or torch.cuda.is_available(), reason="Triton can run here")
def test_triton_backend_on_cpu_needs_the_interpreter():
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        with mbkernels.use_backend("triton"):
            pass


def test_package_imports_without_the_extension(tmp_path):
    """A GPU machine can use a source checkout with no build: hide _C and use the model."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'mbkernels._C':\n"
        "            raise ImportError('hidden for the test')\n"
        "sys.meta_path.insert(0, _Block())\n")
    code = ("import torch, mbkernels\n"
            "from mbkernels import MobileBertConfig, MobileBertModel\n"
            "assert mbkernels.backend._C is None\n"
            "m = MobileBertModel(MobileBertConfig.mobilebert(num_hidden_layers=1, vocab_size=100))\n"
            "m(torch.randint(0, 100, (1, 5))).last_hidden_state.sum().backward()\n"
            "print(mbkernels.info()['ops']['nonorm']['cpu'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "not built" in out.stdout
