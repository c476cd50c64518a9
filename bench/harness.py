"""The benchmark harness: the case registry, the grid, the peaks, timing, memory, and what each result records.

A case is one function registered with `@case(...)` (see bench/cases.py): given a `Spec` (one point
of the grid) it returns a `Workload` — the analytic FLOPs of one timed call and, per provider, a
`prepare()` that does everything that must stay outside the timed region (build, load, pack,
export, compile: measured as `prepare_s`) and returns the zero-argument step that is timed.
`forward_step` turns a forward function into that step for either mode; a case whose step is
already complete (a whole training step with its optimizer) returns its own callable.

Every provider of a point is timed the same way, in its own block: the first call (inside
`prepare_s`), `WARMUP_CALLS` more untimed, then `rounds` timed calls, where rounds fills
pytest-benchmark's --benchmark-max-time with at least --benchmark-min-rounds.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch._dynamo  # imported by the first custom-op call otherwise (~2 s inside the first timed prepare)

import mbkernels
from mbkernels import backend, use_backend
from mbkernels.bench_report import PROVIDER_ORDER
from mbkernels.export import onnx_export
from mbkernels.testing import rel_err

ROOT = Path(__file__).resolve().parents[1]
# The op benchmarks build their inputs with the tests' builders (tests/op_cases.py): one reference.
if str(ROOT / "tests") not in sys.path:
    sys.path.append(str(ROOT / "tests"))

MODES = ("infer", "train")
# int8: int8 weights and activations in the GEMMs, float32 everywhere else (the inputs' dtype);
# int8w7: the same with 7-bit weights (mbkernels.quantize(weight_bits=7); ONNX Runtime's reduce_range);
# CPU inference, for the cases that list them.
INT8_WEIGHT_BITS = {"int8": 8, "int8w7": 7}
INT8_DTYPES = tuple(INT8_WEIGHT_BITS)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32,
          "int8w7": torch.float32}
# Every provider a case may offer, in report order. Op peers: reference (eager torch), compile (of
# the reference) and sdpa (attention); layer/model peers: reference, hf, compile (of HF), ort; the
# call-overhead cases: fused against `kernel`, the op's C++ kernel called directly (bench/kernel_calls.py).
PROVIDERS = PROVIDER_ORDER
OP_PROVIDERS = ("fused", "reference", "compile")
MODULE_PROVIDERS = ("fused", "reference", "hf", "compile", "ort")

# batch x sequence per level; the default fits in ~10 minutes on a 2-core CPU (torch.compile and the
# ONNX export of every point dominate), the full grid is --bench-full.
SIZES = {
    "smoke": [(1, 128)],
    "default": [(1, 128), (8, 128)],
    "full": [(b, s) for b in (1, 8, 32) for s in (128, 512)],
}
# Untimed calls after the first one; the last one's duration sizes the rounds.
WARMUP_CALLS = 1
MAX_ROUNDS = 2000
# ONNX Runtime's worker threads spin after a run and take the next provider's cores: idle this long
# after its block.
ORT_PAUSE_S = 0.5
# Output check against the reference in inference mode: catches a provider that is fast because it
# is wrong (a broken export, a compile that dropped the mask), not precision.
CHECK_TOL = {"fp32": 1e-3, "bf16": 1e-1, "fp16": 1e-1, "int8": 1e-1, "int8w7": 1e-1}


# -- the registry ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spec:
    """One point of the grid: a case in one mode, device, dtype and batch x sequence."""

    case: str
    mode: str
    device: str
    dtype: str
    batch: int
    seq: int
    smoke: bool = False

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def key(self) -> str:
        return f"{self.case}-{self.mode}-{self.device}-{self.dtype}-{self.batch}x{self.seq}"


@dataclass
class Provider:
    """How one provider runs a point: `prepare()` returns the step to time."""

    prepare: Callable[[], Callable[[], Any]]
    backend: str = "fused"  # mbkernels backend active while preparing and timing
    info: dict = field(default_factory=dict)  # recorded with the result (exporter, compile mode, ...)


@dataclass
class Workload:
    flops: int  # per timed call: forward, or forward + backward in training mode
    providers: dict[str, Provider]
    expected: Callable[[], torch.Tensor] | None = None  # the reference output (checked in inference mode)
    info: dict = field(default_factory=dict)
    _expected_out: torch.Tensor | None = field(default=None, init=False, repr=False)

    def reference_output(self) -> torch.Tensor:
        """`expected()`, computed once for all the point's providers."""
        if self._expected_out is None:
            self._expected_out = self.expected().float()
        return self._expected_out


@dataclass(frozen=True)
class CaseDef:
    name: str
    build: Callable[[Spec], Workload]
    kind: str  # "op", "layer", "model", "step"
    providers: tuple[str, ...]
    modes: tuple[str, ...]
    devices: tuple[str, ...]
    module: str  # where it was registered: each test module runs its own cases (points(module=...))
    sizes: tuple[tuple[int, int], ...] | None = None  # batch x sequence at every level (else SIZES[level])
    dtypes: tuple[str, ...] | None = None  # a subset of dtypes_for(device, mode) (else all of them)


CASES: dict[str, CaseDef] = {}


def case(name: str, *, kind: str, providers: tuple[str, ...], modes: tuple[str, ...] = MODES,
         devices: tuple[str, ...] = ("cpu", "cuda"), sizes: tuple[tuple[int, int], ...] | None = None,
         dtypes: tuple[str, ...] | None = None):
    """Register `fn(spec) -> Workload` as the benchmark case `name`. `sizes` fixes its batch x
    sequence points at every level (the call-overhead cases time one tiny input); `dtypes` narrows
    the grid's dtypes."""
    unknown = set(providers) - set(PROVIDERS)
    if unknown:
        raise ValueError(f"case {name!r}: providers expected a subset of {PROVIDERS}, got {sorted(unknown)}")

    def register(fn: Callable[[Spec], Workload]) -> Callable[[Spec], Workload]:
        if name in CASES:
            raise ValueError(f"case {name!r} is registered twice")
        CASES[name] = CaseDef(name, fn, kind, tuple(providers), tuple(modes), tuple(devices), fn.__module__,
                              tuple(sizes) if sizes is not None else None,
                              tuple(dtypes) if dtypes is not None else None)
        return fn

    return register


# -- the grid ----------------------------------------------------------------------------------------

def dtypes_for(device: str, mode: str) -> tuple[str, ...]:
    """fp32 everywhere; bf16 inference on CPU; bf16 and fp16 on GPU (both modes)."""
    if device == "cuda":
        return ("fp32", "bf16", "fp16")
    return ("fp32", "bf16") if mode == "infer" else ("fp32",)


def provider_applies(provider: str, spec: Spec) -> bool:
    """Whether a provider is a peer at this point at all (not: whether this machine can run it)."""
    if provider == "ort":  # the HF model exported to ONNX (int8: quantized by ORT), run by ORT's CPU provider
        return spec.device == "cpu" and spec.dtype in ("fp32", *INT8_DTYPES) and spec.mode == "infer"
    if provider == "compile":  # of the reference: its int8 definition is a test oracle, not a peer
        return spec.dtype not in INT8_DTYPES
    return True


def points(level: str, module: str | None = None) -> list[tuple[Spec, str]]:
    """Every (spec, provider) to run (of the cases registered in `module`, if given), providers
    innermost so a point's workload is built once."""
    out = []
    for c in CASES.values():
        if module is not None and c.module != module:
            continue
        for device in c.devices:
            for mode in c.modes:
                extra = INT8_DTYPES if device == "cpu" and mode == "infer" else ()
                for dtype in (*dtypes_for(device, mode), *extra):
                    if (c.dtypes is not None and dtype not in c.dtypes) or (dtype in extra and c.dtypes is None):
                        continue
                    # A case's own sizes; at the smoke level only its first.
                    sizes = (c.sizes[:1] if level == "smoke" else c.sizes) if c.sizes else SIZES[level]
                    for b, s in sizes:
                        spec = Spec(c.name, mode, device, dtype, b, s, smoke=level == "smoke")
                        out.extend((spec, p) for p in c.providers if provider_applies(p, spec))
    return out


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ValueError:  # a module set to None in sys.modules (how the harness tests hide one)
        return True


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX, which oneDNN uses for bf16 matmuls (elsewhere bf16 is emulated)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def skip_reason(spec: Spec, provider: str) -> str | None:
    """Why this machine cannot run the point, or None. Missing hardware or packages skip; they never fail."""
    if spec.device == "cuda" and not torch.cuda.is_available():
        return "CUDA is not available"
    if spec.dtype == "bf16":
        if spec.device == "cpu" and not cpu_has_native_bf16():
            return "this CPU has no native bf16 (AVX512-BF16 or AMX): CPU bf16 runs where it has"
        if spec.device == "cuda" and not torch.cuda.is_bf16_supported():
            return "this GPU does not support bf16"
    hf_peer = provider in ("hf", "compile", "ort") and CASES[spec.case].kind in ("layer", "model")
    if hf_peer and _missing("transformers"):
        return "transformers is not installed (pip install transformers)"
    if provider == "ort":
        if _missing("onnxruntime"):
            return "onnxruntime is not installed (pip install onnxruntime)"
        if _missing("onnxscript"):
            return "onnxscript is not installed (torch.onnx.export(dynamo=True) needs it)"
    if provider == "compile" and spec.device == "cuda" and _missing("triton"):
        return "torch.compile on CUDA needs Triton"
    return None


# -- steps -------------------------------------------------------------------------------------------

def first(out: Any) -> Any:
    """The tensor a step differentiates and checks: the first output of an op or module."""
    if isinstance(out, (tuple, list)):
        return out[0]
    return getattr(out, "last_hidden_state", out)


class UpstreamGrads:
    """One fixed upstream gradient per output shape, shared by every provider of a point."""

    def __init__(self, seed: int = 1):
        self.seed = seed
        self._cache: dict[tuple, torch.Tensor] = {}

    def __call__(self, out: torch.Tensor) -> torch.Tensor:
        key = (tuple(out.shape), out.dtype, out.device)
        if key not in self._cache:
            g = torch.Generator().manual_seed(self.seed)
            self._cache[key] = torch.randn(out.shape, generator=g).to(out.device, out.dtype)
        return self._cache[key]


def forward_step(spec: Spec, forward: Callable[[], Any], params: list[torch.Tensor],
                 grads: UpstreamGrads) -> Callable[[], Any]:
    """The timed step: `forward()` under inference_mode, or forward + backward of its first output
    with a fixed upstream gradient (gradients of `params` reset to None first, as zero_grad does)."""
    sync = torch.cuda.synchronize if spec.device == "cuda" else None
    if spec.mode == "infer":
        def step():
            with torch.inference_mode():
                out = first(forward())
            if sync:
                sync()
            return out
    else:
        def step():
            for p in params:
                p.grad = None
            out = first(forward())
            out.backward(grads(out))
            if sync:
                sync()
            return out
    return step


def leaf_copies(args: Any, device: str) -> Any:
    """Arguments moved to `device`, float tensors as fresh leaves that require grad (lists kept)."""
    if isinstance(args, (list, tuple)):
        return type(args)(leaf_copies(a, device) for a in args)
    if isinstance(args, torch.Tensor):
        t = args.detach().to(device)
        return t.requires_grad_() if t.is_floating_point() else t
    return args


def float_leaves(args: Any) -> list[torch.Tensor]:
    if isinstance(args, (list, tuple)):
        return [t for a in args for t in float_leaves(a)]
    if isinstance(args, torch.Tensor) and args.is_floating_point() and args.requires_grad:
        return [args]
    return []


def compiled(fn: Callable, *, fullgraph: bool = False) -> Callable:
    """torch.compile with one static-shape graph per point (no dynamic-shape recompile between sizes).
    Dynamo's caches are reset first, so each point's compile time is a whole compile and no point
    runs into the recompile limit (the inductor disk cache still applies)."""
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False, fullgraph=fullgraph)


COMPILE_STYLES = {
    "regional": "torch.compile of each HF encoder layer (regional compilation), dynamic=False",
    "full": "torch.compile(HF model, dynamic=False)",
}


def compile_hf(module: torch.nn.Module, whole_model: bool) -> torch.nn.Module:
    """A compiled copy of an HF module. A whole model is compiled per the session's --bench-compile:
    `regional` compiles each encoder layer (torch's regional-compilation recipe: the identical
    layers share one compiled graph, so the 24-layer model compiles in seconds, not minutes),
    `full` compiles the model as one graph."""
    module = copy.deepcopy(module)
    if whole_model and current().compile_style == "regional":
        torch._dynamo.reset()
        for layer in getattr(module, "mobilebert", module).encoder.layer:  # a model with a head: its backbone's
            layer.compile(dynamic=False)
        return module
    return compiled(module)


def compile_info(whole_model: bool) -> str:
    return COMPILE_STYLES[current().compile_style] if whole_model else "torch.compile(HF layer, dynamic=False)"


def ort_session(module: torch.nn.Module, args: tuple, names: list[str], int8: bool = False,
                reduce_range: bool = False):
    """Export `module(*args)` with torch.onnx.export(dynamo=True) and open an ORT CPU session with
    intra-op threads = torch threads. ORT keeps its default thread spinning (its fastest setting);
    the harness pauses after ORT's block instead (ORT_PAUSE_S). `int8`: the export quantized by
    ORT's `quantize_dynamic` with its defaults (int8 weights, activations quantized per tensor at
    run time), what ORT's documentation gives a deployer for transformers on CPU; `reduce_range`: its
    7-bit weights (the option ORT documents for AVX2/AVX-512 CPUs without VNNI)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # The session holds the weights once created: the file (~100 MB for the model) goes right away.
    with tempfile.TemporaryDirectory(dir=current().workdir) as tmp:
        path = os.path.join(tmp, "model.onnx")
        onnx_export(module, args, path, names, ["out"])
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(path, os.path.join(tmp, "int8.onnx"), weight_type=QuantType.QInt8,
                             reduce_range=reduce_range)
            path = os.path.join(tmp, "int8.onnx")
        session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feeds = {name: a.detach().cpu().numpy() for name, a in zip(names, args)}
    return session, feeds


ORT_INFO = {"exporter": "torch.onnx.export(dynamo=True)", "ort_spinning": "default (on); paused after block",
            "ort_threads": "intra_op = torch threads, inter_op = 1"}
ORT_INT8_INFO = {**ORT_INFO, "ort_quantization": "onnxruntime.quantization.quantize_dynamic(weight_type=QInt8), "
                 "its defaults otherwise"}


# -- machine and peaks -------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    if _missing(module):
        return None
    try:
        return __import__(module).__version__
    except Exception:  # a broken optional install must not stop the benchmarks
        return None


def machine_info() -> dict:
    cuda = torch.cuda.is_available()
    info = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "isa": backend.active_isa(),
        "supported_isas": backend.supported_isas(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "cuda": torch.version.cuda if cuda else None,
        "mbkernels": mbkernels.__version__,
        "extension": "built" if backend._C is not None else f"not built ({backend.C_IMPORT_ERROR})",
        "torch": torch.__version__,
        "triton": _version("triton"),
        "transformers": _version("transformers"),
        "onnxruntime": _version("onnxruntime"),
        "python": platform.python_version(),
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    base = info["gpu"] if cuda else f"{info['cpu_model']}-{info['threads']}t"
    info["machine"] = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")
    return info


def matmul_gflops(device: str, dtype: torch.dtype, n: int, seconds: float) -> float:
    """Throughput of back-to-back n x n x n matmuls (at least 2 timed)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    c = torch.mm(a, b)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.mm(a, b, out=c)
    sync()
    count, t0 = 0, time.perf_counter()
    while count < 2 or time.perf_counter() - t0 < seconds:
        torch.mm(a, b, out=c)
        if device == "cuda" and count % 8 == 7:
            sync()
        count += 1
    sync()
    return 2 * n ** 3 * count / (time.perf_counter() - t0) / 1e9


def fma_peak(threads: int, seconds: float) -> dict:
    """The C++ FMA loop's GFLOP/s over wall time, and the share of `threads` cores the process got
    while it ran. Below 1, another process was competing for the cores: the peak is then the rate
    per CPU-second times `threads` (what the cores do while they run) and the run is flagged busy,
    since every other figure of it suffers the same competition."""
    if backend._C is None:
        return {"fma_fp32_gflops": None, "fma_fp32_gflops_wall": None, "fma_cpu_share": None}
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    wall_rate = backend._C.fma_peak_gflops(threads, seconds)
    r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    share = ((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)) / (wall * threads)
    return {"fma_fp32_gflops": wall_rate / min(1.0, max(share, 1e-3)), "fma_fp32_gflops_wall": wall_rate,
            "fma_cpu_share": share, "machine_busy": share < 0.9}


def measure_peaks(smoke: bool) -> dict:
    """Peaks of this run: CPU fp32 = the FMA loop (`_C.fma_peak_gflops`); CPU int8 = the int8 kernel's
    dot-product loop (`_C.int8_peak_gops`, 8- and 7-bit weights); CPU bf16 and every GPU dtype = the
    large-matmul rate of that dtype; the fp32/bf16 matmul rates are reported beside."""
    seconds = 0.1 if smoke else 0.5
    threads = torch.get_num_threads()
    peaks: dict[str, Any] = {"threads": threads, **fma_peak(threads, seconds)}
    n = 256 if smoke else 1024
    peaks["matmul_n_cpu"] = n
    peaks["matmul_fp32_gflops"] = matmul_gflops("cpu", torch.float32, n, seconds)
    peaks["matmul_bf16_gflops"] = matmul_gflops("cpu", torch.bfloat16, n, seconds)
    basis = {"cpu:fp32": ("fma_fp32_gflops", peaks["fma_fp32_gflops"]),
             "cpu:bf16": ("matmul_bf16_gflops", peaks["matmul_bf16_gflops"])}
    if backend._C is not None:  # int8: the dot-product loop of the kernel each weight width runs
        for dtype, bits in INT8_WEIGHT_BITS.items():
            try:
                peaks[f"{dtype}_gops"] = backend._C.int8_peak_gops(threads, seconds, bits)
            except ValueError:  # an ISA without an int8 kernel
                continue
            basis[f"cpu:{dtype}"] = (f"{dtype}_gops", peaks[f"{dtype}_gops"])
    if peaks["fma_fp32_gflops"] is None:  # no extension: the best fp32 rate we can measure
        basis["cpu:fp32"] = ("matmul_fp32_gflops", peaks["matmul_fp32_gflops"])
    if torch.cuda.is_available():
        n = 2048 if smoke else 8192
        peaks["matmul_n_cuda"] = n
        peaks["cuda_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
        for name in ("fp32", "bf16", "fp16"):
            if name == "bf16" and not torch.cuda.is_bf16_supported():
                continue
            rate = matmul_gflops("cuda", DTYPES[name], n, seconds)
            peaks[f"cuda_matmul_{name}_gflops"] = rate
            basis[f"cuda:{name}"] = (f"cuda_matmul_{name}_gflops", rate)
    peaks["basis"] = {k: {"source": src, "gflops": v} for k, (src, v) in basis.items()}
    return peaks


# -- memory ------------------------------------------------------------------------------------------

def _release_free_heap() -> None:
    """glibc's malloc_trim: return the heap's free pages to the OS, so RSS is live memory (no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def step_memory(step: Callable[[], Any], device: str, min_seconds: float = 0.05) -> dict:
    """Peak memory while the step runs (after its warm-up): max allocated on CUDA; on CPU the RSS,
    sampled every millisecond by a subprocess (bench/rss_sampler.py) while the step repeats for at
    least `min_seconds`, after the heap's free pages went back to the OS. `*_step_mb` is the peak
    above the level just before the step: what the step itself needs (saved activations, gradients,
    workspaces), as the absolute peak also counts the process, the weights and other providers' copies."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        peak = torch.cuda.max_memory_allocated()
        return {"peak_mem_mb": peak / 2**20, "peak_mem_step_mb": (peak - before) / 2**20,
                "memory": "torch.cuda.max_memory_allocated"}
    if _missing("psutil"):
        return {"memory": "not measured: psutil is not installed"}
    _release_free_heap()  # else the warm-up steps' freed memory stays resident and hides the step's peak
    sampler = subprocess.Popen([sys.executable, str(Path(__file__).with_name("rss_sampler.py")), str(os.getpid()),
                                "0.001"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if sampler.stdout.readline().strip() != "ready":
            raise RuntimeError("bench/rss_sampler.py did not start")
        t0 = time.perf_counter()
        step()
        while time.perf_counter() - t0 < min_seconds:
            step()
        sampler.stdin.close()
        first_rss, peak_rss = map(int, sampler.stdout.readline().split())
    finally:
        sampler.wait(timeout=30)
    return {"peak_rss_mb": peak_rss / 2**20, "peak_rss_step_mb": (peak_rss - first_rss) / 2**20,
            "memory": "RSS sampled at 1 kHz by a subprocess (psutil)"}


# -- one benchmark -----------------------------------------------------------------------------------

_current: list[Session] = []


def current() -> Session:
    """The running benchmark session (bench/conftest.py starts it)."""
    if not _current:
        raise RuntimeError("no benchmark session: run the cases through pytest bench/")
    return _current[0]


class Session:
    """State shared by the benchmarks of one pytest session: level, peaks, the current workload."""

    def __init__(self, level: str, compile_style: str):
        self.level = level
        self.compile_style = compile_style
        self.workdir = tempfile.mkdtemp(prefix="mbk-bench-")
        self._peaks: dict | None = None
        self._machine: dict | None = None
        self._workload: tuple[Spec, Workload] | None = None
        self.results: list[dict] = []
        _current[:] = [self]

    @property
    def smoke(self) -> bool:
        return self.level == "smoke"

    @property
    def machine(self) -> dict:
        if self._machine is None:
            self._machine = machine_info()
        return self._machine

    @property
    def peaks(self) -> dict:
        if self._peaks is None:  # measured before the first benchmark, before any ORT thread exists
            self._peaks = measure_peaks(self.smoke)
        return self._peaks

    @property
    def peaks_measured(self) -> bool:
        return self._peaks is not None

    def workload(self, spec: Spec) -> Workload:
        """The point's workload, built once for all its providers (the previous one is dropped)."""
        if self._workload is None or self._workload[0] != spec:
            self._workload = None
            torch.manual_seed(0)
            self._workload = (spec, CASES[spec.case].build(spec))
        return self._workload[1]

    def close(self) -> None:
        import shutil

        self._workload = None
        _current.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _rounds(first_call_s: float, max_time: float, min_rounds: int) -> int:
    return max(min_rounds, min(MAX_ROUNDS, math.ceil(max_time / max(first_call_s, 1e-9))))


def _as_tensor(out: Any) -> torch.Tensor:
    return torch.from_numpy(out) if not isinstance(out, torch.Tensor) else out


def run(benchmark, session: Session, spec: Spec, provider: str, max_time: float, min_rounds: int) -> dict:
    """Prepare, check, warm up and time one provider at one point; returns the recorded extra_info."""
    peaks, machine = session.peaks, session.machine  # measured before anything else of the session runs
    workload = session.workload(spec)
    p = workload.providers[provider]
    with use_backend(p.backend):
        backend.last_ran.clear()
        t0 = time.perf_counter()
        step = p.prepare()
        out = step()  # the first call: compiles, exports' first run, packs weights
        prepare_s = time.perf_counter() - t0
        ran = dict(backend.last_ran)
        info = {
            "point": spec.key, "case": spec.case, "kind": CASES[spec.case].kind, "mode": spec.mode,
            "device": spec.device, "dtype": spec.dtype, "batch": spec.batch, "seq": spec.seq,
            "tokens": spec.batch * spec.seq, "provider": provider, "backend": p.backend, "ran": ran,
            "flops": workload.flops, "prepare_s": prepare_s, "threads": torch.get_num_threads(),
            **workload.info, **p.info,
        }
        if spec.mode == "infer" and workload.expected is not None and out is not None:
            err = rel_err(_as_tensor(first(out)).float(), workload.reference_output())
            info["rel_err_vs_reference"] = err
            # int8 peers are timed however far they are from the float32 reference: the report shows
            # the error beside the time (ONNX Runtime's per-tensor activations lose MobileBERT's small
            # channels). Ours must stay within the tolerance.
            peer_int8 = spec.dtype in INT8_DTYPES and provider != "fused"
            if not err <= CHECK_TOL[spec.dtype] and not peer_int8:
                raise AssertionError(f"{spec.key} {provider}: output differs from the reference by "
                                     f"{err:.3g} (tolerance {CHECK_TOL[spec.dtype]:g})")
        del out
        benchmark.group = spec.key
        if benchmark.disabled:  # smoke / CI: one more call through the fixture, nothing timed
            benchmark(step)
        else:
            for _ in range(WARMUP_CALLS - 1):
                step()
            t1 = time.perf_counter()
            step()
            rounds = _rounds(time.perf_counter() - t1, max_time, min_rounds)
            benchmark.pedantic(step, rounds=rounds, warmup_rounds=0, iterations=1)
            stats = benchmark.stats.stats
            info.update(median_s=stats.median, iqr_s=stats.iqr, q1_s=stats.q1, q3_s=stats.q3,
                        rounds=stats.rounds)
            basis = peaks["basis"].get(f"{spec.device}:{spec.dtype}") or {}
            peak = basis.get("gflops")
            gflops = workload.flops / stats.median / 1e9 if workload.flops else None
            info.update(gflops=gflops, peak_gflops=peak, peak_basis=basis.get("source"),
                        pct_peak=100 * gflops / peak if gflops and peak else None)
        if spec.mode == "train":
            info.update(step_memory(step, spec.device))
        if provider == "ort" and not benchmark.disabled:
            time.sleep(ORT_PAUSE_S)
    info["machine"] = {k: machine[k] for k in ("machine", "cpu_model", "isa", "threads", "torch", "triton", "gpu")}
    info["fma_fp32_gflops"] = peaks["fma_fp32_gflops"]
    info["matmul_fp32_gflops"] = peaks["matmul_fp32_gflops"]
    info["matmul_bf16_gflops"] = peaks["matmul_bf16_gflops"]
    benchmark.extra_info.update(info)
    session.results.append(info)
    return info
