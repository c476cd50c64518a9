"""`mbkernels distill` as separate processes: help, a tiny real run, resume after the process exits,
two `torchrun` processes (gloo) against one, and the example script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from test_distill_support import STUDENT, max_rel_diff, read_metrics

pytest_plugins = ["test_distill_support"]  # fixtures: bbc_corpus, tiny_teacher, vocab_dir

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "mbkernels.cli", "distill"]


def run(cmd: list[str], timeout: int = 300, **env) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **env})
    assert proc.returncode == 0, f"{cmd}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def args(out, corpus, vocab, teacher, *extra: str) -> list[str]:
    sets = [x for k, v in STUDENT.items() for x in ("--set", f"{k}={v}")]
    return ["--output-dir", str(out), "--corpus", corpus, "--tokenizer", vocab, "--teacher", teacher,
            "--strategy", "progressive", "--layer-steps", "2", "--steps", "2", "--batch-size", "8",
            "--max-seq-len", "32", "--no-progress", *sets, *extra]


def weights(out) -> dict:
    return load_file(str(Path(out) / "model" / "model.safetensors"))


def test_help_lists_the_options():
    proc = run([*CLI, "--help"])
    for option in ("--strategy", "--teacher", "--layer-map", "--head-map", "--optimizer", "--precision",
                   "--grad-accum", "--save-every", "--resume", "--corpus", "torchrun"):
        assert option in proc.stdout, option


def test_bad_input_is_named(tmp_path, bbc_corpus, vocab_dir):
    proc = subprocess.run([*CLI, "--output-dir", str(tmp_path), "--corpus", bbc_corpus, "--tokenizer", vocab_dir,
                           "--strategy", "joint", "--layer-steps", "2"], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 2 and "teacher: the joint strategy distils from a teacher" in proc.stderr


def test_run_and_resume_after_the_process_exits(tmp_path, bbc_corpus, vocab_dir, tiny_teacher):
    """A tiny real run; then the same run stopped at step 3 (process exits) and resumed by a new
    process ends with bitwise the same weights."""
    run([*CLI, *args(tmp_path / "straight", bbc_corpus, vocab_dir, tiny_teacher)])
    m = read_metrics(tmp_path / "straight")
    assert [x["phase"] for x in m] == ["layer 1"] * 2 + ["layer 2"] * 2 + ["pretraining distillation"] * 2
    proc = run([*CLI, *args(tmp_path / "split", bbc_corpus, vocab_dir, tiny_teacher, "--stop-after", "3")])
    assert '"finished": false' in proc.stdout and not (tmp_path / "split" / "model").exists()
    run([*CLI, *args(tmp_path / "split", bbc_corpus, vocab_dir, tiny_teacher)])
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "split")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_torchrun_two_processes_match_one(tmp_path, bbc_corpus, vocab_dir, tiny_teacher):
    """Data parallel over 2 gloo processes (4 examples each) == 1 process with the same global batch
    of 8 (fixed shapes, so padding counts alike in both), to 1e-5 relative error per tensor."""
    extra = ("--pad-to-multiple-of", "32")
    run(["torchrun", "--standalone", "--nproc_per_node=2", "-m", "mbkernels.cli", "distill",
         *args(tmp_path / "ddp", bbc_corpus, vocab_dir, tiny_teacher, *extra)], timeout=400)
    run([*CLI, *args(tmp_path / "one", bbc_corpus, vocab_dir, tiny_teacher, *extra)], OMP_NUM_THREADS="1")
    assert max_rel_diff(weights(tmp_path / "ddp"), weights(tmp_path / "one")) <= 1e-5
    ddp, one = read_metrics(tmp_path / "ddp"), read_metrics(tmp_path / "one")
    for x, y in zip(ddp, one):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5) and x["tokens"] == y["tokens"]


def test_example_script_runs(tmp_path):
    proc = run([sys.executable, "python/distill_student.py", "--out", str(tmp_path), "--steps", "2"])
    assert "student model (HF format)" in proc.stdout
    assert (tmp_path / "student" / "model" / "model.safetensors").is_file()
