"""Every script in python/ runs (small settings where the script offers them)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL_ARGS = {"hf_round_trip.py": ["--layers", "2"], "patch_hf_model.py": ["--layers", "2"],
              "proof_probe.py": ["--limit", "20"]}
# Scripts whose smoke test checks their output too, in the suite of the part they show.
TESTED_ELSEWHERE = {"distill_student.py",  # tests/test_distill_cli.py::test_example_script_runs
                    "proof_student.py"}    # tests/test_finetune_proof.py (--smoke)


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "python").glob("*.py")
                                          if p.name not in TESTED_ELSEWHERE))
def test_example_runs(script):
    pytest.importorskip("transformers")
    cmd = [sys.executable, str(ROOT / "python" / script), *SMALL_ARGS.get(script, [])]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
