#!/usr/bin/env bash
# The GPU suite in one command, from a source checkout (no `_C` build needed): the Triton kernel
# tests on CUDA, then the GPU benchmarks of the issue's targets (bf16; whole MobileBertModel training
# step and inference at 32 x 128, also 8 x 512; one layer; attention against SDPA), against Hugging
# Face eager and torch.compile of Hugging Face. Writes bench/results/gpu-*.{log,json} and the
# report (bench/results/<gpu>.md + plots). Each stage has a time limit so that the whole run stays
# under 8 minutes; a stage that runs out is reported and the rest still runs.
# Without CUDA every test and benchmark point skips (the script still exits 0).
#
#   bash bench/gpu_suite.sh            # MBK_GPU_SUITE_QUICK=1: tests only
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET  # the real GPU compiler, not the CPU interpreter
status=0
if python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  out=bench/results
else
  out=$(mktemp -d)  # nothing of a run that skipped everything belongs in bench/results
  echo "no CUDA: every point skips; logs go to $out"
fi
mkdir -p "$out"

stage() {  # stage <seconds> <name> <command...>: run with a time limit, log to $out/gpu-<name>.log
  local limit=$1 name=$2
  shift 2
  echo "== $name (limit ${limit}s)"
  local start=$SECONDS
  timeout --signal=INT --kill-after=20 "$limit" "$@" 2>&1 | tee "$out/gpu-$name.log" | tail -n 25
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - start))s"
  if [ "$rc" -ne 0 ]; then status=1; fi
}

python3 - <<'EOF'
import torch
print("device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA (every GPU point skips)")
print("torch", torch.__version__, "cuda", torch.version.cuda)
EOF

# 1. Every Triton kernel vs the float64 reference on CUDA tensors: forward, gradients, masks,
#    dropout masks bit for bit, fp32/bf16/fp16, autocast, torch.compile, the S x S allocation check.
stage 240 tests python3 -m pytest -q -p no:cacheprovider tests/test_triton.py

if [ "${MBK_GPU_SUITE_QUICK:-0}" != "1" ]; then
  # 2. Benchmarks (bench/cases.py on the `full` size grid, selected by test id
  #    <case>-<mode>-cuda-bf16-<B>x<S>-<provider>): first every provider but torch.compile, then
  #    torch.compile, whose preparation (compiling) takes most of its stage.
  points="(model or layer or attention) and cuda-bf16 and (32x128 or 8x512) and not bottleneck"
  bench=(python3 -m pytest -q -p no:cacheprovider bench/test_bench.py --benchmark-only
         --benchmark-max-time 0.5 --benchmark-min-rounds 5)
  MBK_BENCH=full stage 150 bench "${bench[@]}" -k "$points and not compile" --benchmark-json "$out/gpu-bench.json"
  MBK_BENCH=full stage 180 bench-compile "${bench[@]}" -k "$points and compile and 32x128" \
    --benchmark-json "$out/gpu-bench-compile.json"
  # 3. The report: ratios between providers of the same point, GFLOP/s, % of the bf16 matmul peak,
  #    training peak memory (max_memory_allocated).
  jsons=()
  for f in "$out/gpu-bench.json" "$out/gpu-bench-compile.json"; do
    if [ -f "$f" ] && python3 -c "import json,sys; sys.exit(0 if json.load(open('$f'))['benchmarks'] else 1)"; then
      jsons+=("$f")
    fi
  done
  if [ ${#jsons[@]} -gt 0 ]; then
    python3 -m mbkernels.bench_report "${jsons[@]}" --out "$out" || status=1
  else
    echo "no benchmark results (no CUDA): no report"
  fi
fi
echo "gpu suite: exit $status after ${SECONDS}s"
exit $status
