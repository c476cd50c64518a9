"""Training never loses work: real `mbkernels distill` processes on real text, killed with SIGKILL —
inside a checkpoint write, between its two renames, or at random moments — resume from the last
complete checkpoint and end with bitwise the parameters of an uninterrupted run; a truncated or
corrupted checkpoint is detected (SHA-256 digest) with a clear error, and the previous one is used.

The uninterrupted run is the same CLI entry point called in this process (same code, same thread
count: the children run with OMP_NUM_THREADS=1, this process with torch.set_num_threads(1)).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mbkernels.distill import checkpoint
from mbkernels.distill.cli import main as distill_main

pytest_plugins = ["test_distill_support"]  # fixtures: bbc_corpus, vocab_dir

ROOT = Path(__file__).resolve().parents[1]
STEPS = 6
TINY = {"num_hidden_layers": 2, "hidden_size": 64, "embedding_size": 32, "intra_bottleneck_size": 32,
        "intermediate_size": 64, "num_attention_heads": 2}

# Runs in the child before the CLI: stalls the save of checkpoint STALL_STEP at STALL_WHERE ("write":
# after 1 MiB of it reached the temporary file; "rename": after its digest was renamed into place,
# before the checkpoint itself is), announces it through the STALL_MARKER file, and waits to be killed.
HOOK = r"""
import os, sys, time
from mbkernels.distill import checkpoint
step, where, marker = int(os.environ["STALL_STEP"]), os.environ["STALL_WHERE"], os.environ["STALL_MARKER"]
saving = []

def stall():
    open(marker, "w").close()
    time.sleep(3600)

real_save, real_write, real_replace = checkpoint.save, checkpoint._HashingWriter.write, os.replace

def save(state, folder, s, keep=2):
    saving[:] = [s, 0]
    return real_save(state, folder, s, keep)

def write(self, data):
    n = real_write(self, data)
    if where == "write" and saving and saving[0] == step:
        saving[1] += len(data)
        if saving[1] > 1 << 20:
            self.flush()
            stall()
    return n

def replace(src, dst):
    real_replace(src, dst)
    if where == "rename" and saving and saving[0] == step and dst.endswith(checkpoint.DIGEST_SUFFIX):
        stall()

checkpoint.save, checkpoint._HashingWriter.write, os.replace = save, write, replace
from mbkernels.cli import main
sys.exit(main(["distill", *sys.argv[1:]]))
"""


def cli_args(out: Path, corpus: str, vocab: str, *extra: str) -> list[str]:
    sets = [x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]
    return ["--strategy", "pretrain", "--student", "mobilebert", *sets, "--corpus", corpus, "--tokenizer", vocab,
            "--steps", str(STEPS), "--batch-size", "4", "--max-seq-len", "32", "--save-every", "1",
            "--keep-checkpoints", "3", "--no-progress", "--output-dir", str(out), *extra]


def child_env(**extra: str) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model" / "model.safetensors"))


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"parameters differ from the uninterrupted run: {different}"


def steps_logged(out: Path) -> list[int]:
    import json

    with open(out / "metrics.jsonl") as f:
        return [json.loads(line)["step"] for line in f if line.strip()]


def run_in_process(args: list[str]) -> int:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return distill_main(args)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, bbc_corpus, vocab_dir) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("uninterrupted")
    assert run_in_process(cli_args(out, bbc_corpus, vocab_dir)) == 0
    assert steps_logged(out) == list(range(1, STEPS + 1))
    return weights(out)


# Between the renames is a window of microseconds; CI runs the kill inside the write.
@pytest.mark.parametrize("where", ["write", pytest.param("rename", marks=pytest.mark.slow)])
def test_kill_inside_a_checkpoint_save_resumes_from_the_previous_one(tmp_path, bbc_corpus, vocab_dir,
                                                                      uninterrupted, where):
    stall_step, marker = 4, tmp_path / "stalled"
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOOK, *cli_args(out, bbc_corpus, vocab_dir)], cwd=ROOT,
                            env=child_env(STALL_STEP=str(stall_step), STALL_WHERE=where, STALL_MARKER=str(marker)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert proc.poll() is None, f"the run ended before the stall: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "the run never reached the stalled save"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    folder = out / "checkpoints"
    names = sorted(os.listdir(folder))
    if where == "write":  # a partial temporary file, no step-4 files
        partial = [n for n in names if n.endswith(".tmp")]
        assert len(partial) == 1 and (folder / partial[0]).stat().st_size > 1 << 20, names
        assert "step-00000004.pt" not in names and "step-00000004.pt.sha256" not in names
    else:  # the digest is in place, the checkpoint is not
        assert "step-00000004.pt.sha256" in names and "step-00000004.pt" not in names, names
    assert checkpoint.latest(folder) == str(folder / "step-00000003.pt")

    assert run_in_process(cli_args(out, bbc_corpus, vocab_dir)) == 0  # resume (auto) and finish
    assert steps_logged(out) == list(range(1, STEPS + 1))  # each step logged once: nothing lost, nothing twice
    assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]  # the next save removed the orphan
    assert_same_weights(weights(out), uninterrupted)


def damage_newest(folder: Path, how: str) -> Path:
    newest = Path(checkpoint.latest(folder))
    data = bytearray(newest.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    else:  # one bit inside the tensor data: torch.load alone would accept it as a wrong number
        data[len(data) // 2] ^= 0x10
    newest.write_bytes(bytes(data))
    return newest


@pytest.mark.parametrize("how", ["truncated", "corrupt"])
def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning(tmp_path, bbc_corpus, vocab_dir, uninterrupted, how):
    out = tmp_path / "run"
    assert run_in_process(cli_args(out, bbc_corpus, vocab_dir, "--stop-after", "4")) == 0
    bad = damage_newest(out / "checkpoints", how)
    assert bad.name == "step-00000004.pt"
    problem = checkpoint.damage(bad)
    assert "expected SHA-256" in problem and "truncated or corrupt" in problem
    with pytest.warns(UserWarning, match=r"checkpoint .*step-00000004\.pt' skipped: expected SHA-256 [0-9a-f]{64}"):
        assert run_in_process(cli_args(out, bbc_corpus, vocab_dir)) == 0  # resumes from step 3
    assert steps_logged(out) == list(range(1, STEPS + 1))
    assert_same_weights(weights(out), uninterrupted)


def test_resuming_explicitly_from_a_damaged_checkpoint_is_a_clear_error(tmp_path, bbc_corpus, vocab_dir, capsys):
    out = tmp_path / "run"
    assert run_in_process(cli_args(out, bbc_corpus, vocab_dir, "--stop-after", "2")) == 0
    bad = damage_newest(out / "checkpoints", "truncated")
    capsys.readouterr()
    assert run_in_process(cli_args(out, bbc_corpus, vocab_dir, "--resume", str(bad))) == 2
    err = capsys.readouterr().err
    assert f"resume: could not read checkpoint '{bad}'" in err
    assert "expected SHA-256" in err and "got" in err and "truncated or corrupt" in err


def test_checkpoint_without_digest_still_loads_and_a_broken_one_is_named(tmp_path):
    """Checkpoints written before digests existed: verified by loading them."""
    path = checkpoint.save({"step": 1, "w": torch.arange(4.0)}, tmp_path, 1)
    os.remove(path + checkpoint.DIGEST_SUFFIX)
    assert checkpoint.damage(path) is None and torch.equal(checkpoint.load(path)["w"], torch.arange(4.0))
    Path(path).write_bytes(Path(path).read_bytes()[:100])
    assert checkpoint.damage(path).startswith("it does not load")
    with pytest.warns(UserWarning, match="skipped: it does not load"):
        assert checkpoint.latest(tmp_path) is None


@pytest.mark.slow
def test_random_kills_resume_to_the_same_parameters(tmp_path, bbc_corpus, vocab_dir, uninterrupted):
    """SIGKILL at random moments of the training loop (steps, checkpoint writes, the export) until a
    run finishes by itself; every restart resumes from the newest complete checkpoint."""
    rng = random.Random(int(os.environ.get("MBK_KILL_SEED", "0")))
    out, kills = tmp_path / "run", []
    cmd = [sys.executable, "-m", "mbkernels.cli", "distill", *cli_args(out, bbc_corpus, vocab_dir)]
    for attempt in range(40):
        before = len(steps_logged(out)) if (out / "metrics.jsonl").exists() else 0
        proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Wait until this run has trained at least one step past where the last one stopped, then
        # let it go on for a random time of up to about two steps, checkpoint writes included.
        while proc.poll() is None and (not (out / "metrics.jsonl").exists() or len(steps_logged(out)) <= before):
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read()
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills.append(len(steps_logged(out)))
    else:
        pytest.fail(f"the run never finished: killed at steps {kills}")
    print(f"killed {len(kills)} times, after steps {kills}")
    assert len(kills) >= 2, kills
    assert steps_logged(out) == list(range(1, STEPS + 1))
    assert_same_weights(weights(out), uninterrupted)
