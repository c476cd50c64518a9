import json
import subprocess
import sys


def _run(*args):
    return subprocess.run([sys.executable, "-m", "mbkernels.cli", *args], capture_output=True, text=True, check=True)


def test_info_json():
    d = json.loads(_run("info", "--json").stdout)
    assert {"mbkernels", "torch", "triton", "compiled_isas", "active_isa", "cuda_available", "threads", "ops"} <= set(d)
    assert set(d["ops"]) == {"nonorm", "layernorm", "linear_norm", "bottleneck_attention", "attention",
                             "ffn_stack", "embedding", "encoder"}


def test_demo_checks_every_op_and_times_the_model():
    out = _run("demo", "--layers", "2", "--seq", "32", "--repeats", "2").stdout
    for op in ("nonorm", "layernorm", "linear_norm", "bottleneck_attention", "attention", "ffn_stack", "embedding"):
        line = next(line for line in out.splitlines() if line.strip().startswith(op + " "))
        err = float(line.split()[1])
        assert err <= 1e-5, line
    assert "mbkernels fused" in out and "Hugging Face eager" in out
