"""Every script in python/ runs (small settings where the script offers them)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL_ARGS = {"hf_round_trip.py": ["--layers", "2"]}


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "python").glob("*.py")))
def test_example_runs(script):
    pytest.importorskip("transformers")
    cmd = [sys.executable, str(ROOT / "python" / script), *SMALL_ARGS.get(script, [])]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
