"""`mbkernels bench-report`: saved pytest-benchmark JSON → `bench/results/<machine>.md` + PNG plots.

    pytest bench/ --benchmark-only --benchmark-json=bench.json
    mbkernels bench-report bench.json [more.json ...] [--out bench/results] [--name MACHINE]

The benchmarks (bench/) store everything a row needs in each result's `extra_info` (point, provider,
median and IQR, FLOPs, GFLOP/s, % of peak, preparation time, memory) and the machine and its
measured peaks in `machine_info["mbkernels"]`; this module only reads them back, adds the ratio of
every provider to every peer of the same point, and draws. Plots use matplotlib's Agg backend.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

BASELINE = "fused"
PROVIDER_ORDER = ("fused", "reference", "hf", "compile", "ort", "sdpa", "kernel")
PROVIDER_NAMES = {
    "fused": "mbkernels fused", "reference": "mbkernels reference", "hf": "HF eager",
    "compile": "torch.compile", "ort": "ONNX Runtime", "sdpa": "torch SDPA",
    "kernel": "C++ kernel, direct call",
}
MODE_NAMES = {"infer": "inference", "train": "training (forward + backward)"}
OVERHEAD_KIND = "overhead"  # the per-op call-overhead cases: fused vs the kernel called directly


def _is_overhead(r: dict) -> bool:
    return r.get("kind") == OVERHEAD_KIND


# -- data --------------------------------------------------------------------------------------------

def add_ratios(records: list[dict]) -> list[dict]:
    """Give each timed record `ratios[peer] = peer median / this median` over the other providers of
    its point (> 1: this provider is faster). Mutates and returns `records`."""
    by_point: dict[str, dict[str, float]] = defaultdict(dict)
    for r in records:
        if r.get("median_s"):
            by_point[r["point"]][r["provider"]] = r["median_s"]
    for r in records:
        if r.get("median_s"):
            r["ratios"] = {p: m / r["median_s"] for p, m in by_point[r["point"]].items() if p != r["provider"]}
    return records


def load(paths: list[str | Path]) -> tuple[list[dict], dict]:
    """The benchmark records of pytest-benchmark JSON files (later files win for a repeated
    point/provider) and the mbkernels machine description of the first file."""
    records: dict[tuple[str, str], dict] = {}
    meta: dict = {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        if not isinstance(data, dict) or "benchmarks" not in data:
            raise ValueError(f"{path}: expected a pytest-benchmark JSON file (with a 'benchmarks' list)")
        if not meta:
            meta = dict(data.get("machine_info", {}).get("mbkernels") or {})
            meta.setdefault("datetime", data.get("datetime"))
            meta.setdefault("commit", (data.get("commit_info") or {}).get("id"))
        for b in data["benchmarks"]:
            info = dict(b.get("extra_info") or {})
            if "point" not in info:  # not an mbkernels benchmark
                continue
            stats = b.get("stats") or {}
            info.setdefault("median_s", stats.get("median"))
            info.setdefault("iqr_s", stats.get("iqr"))
            records[(info["point"], info["provider"])] = info
    recs = add_ratios(list(records.values()))
    if not recs:
        raise ValueError(f"{', '.join(map(str, paths))}: no mbkernels benchmark results in these files")
    if not meta.get("machine"):
        meta["machine"] = (recs[0].get("machine") or {}).get("machine", "unknown-machine")
    return recs, meta


def _providers(records: list[dict]) -> list[str]:
    present = {r["provider"] for r in records}
    return [p for p in PROVIDER_ORDER if p in present] + sorted(present - set(PROVIDER_ORDER))


def _cases(records: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for r in records:
        seen.setdefault(r["case"], None)
    return list(seen)


def _sections(records: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """(device, dtype, mode) → its timed records, in a stable order."""
    out: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for r in records:
        if r.get("median_s") and not _is_overhead(r):
            out[(r["device"], r["dtype"], r["mode"])].append(r)
    order = {"cpu": 0, "cuda": 1, "fp32": 0, "bf16": 1, "fp16": 2, "infer": 0, "train": 1}
    return dict(sorted(out.items(), key=lambda kv: tuple(order.get(k, 9) for k in kv[0])))


def _rows(records: list[dict]) -> list[tuple[str, int, int]]:
    """(case, batch, seq) rows: cases in registry order, sizes by batch then sequence."""
    cases = _cases(records)
    keys = {(r["case"], r["batch"], r["seq"]) for r in records}
    return sorted(keys, key=lambda k: (cases.index(k[0]), k[2], k[1]))


def _index(records: list[dict]) -> dict[tuple[str, int, int, str], dict]:
    return {(r["case"], r["batch"], r["seq"], r["provider"]): r for r in records}


# -- formatting --------------------------------------------------------------------------------------

def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def _num(x: float | None, fmt: str = ".3g") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _table(header: list[str], rows: list[list[str]], numbers: bool = True) -> list[str]:
    """A Markdown table: the first column left-aligned, the others right-aligned if `numbers`."""
    align = "|---|" + ("---:|" if numbers else "---|") * (len(header) - 1)
    return ["| " + " | ".join(header) + " |", align] + ["| " + " | ".join(r) + " |" for r in rows]


def _label(case: str, batch: int, seq: int) -> str:
    return f"{case} {batch}×{seq}"


def _order(provider: str) -> int:
    return PROVIDER_ORDER.index(provider) if provider in PROVIDER_ORDER else len(PROVIDER_ORDER)


def speedup_lines(records: list[dict]) -> list[str]:
    """One line per point with fused results: its median and its speedup over each peer."""
    lines = []
    for r in records:
        if r["provider"] != BASELINE or not r.get("ratios") or _is_overhead(r):
            continue
        ordered = sorted(r["ratios"].items(), key=lambda kv: _order(kv[0]))
        peers = ", ".join(f"{p} {x:.2f}×" for p, x in ordered)
        lines.append(f"{r['point']:<40} fused {_ms(r['median_s']):>8} ms   {peers}")
    return lines


def overhead_rows(records: list[dict]) -> list[dict]:
    """Per overhead point with both providers timed: op, size, fused and kernel medians in µs, their
    difference (what the public op costs beyond its kernel) and what ran inside the fused op."""
    idx: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in records:
        if _is_overhead(r) and r.get("median_s"):
            idx[r["point"]][r["provider"]] = r
    rows = []
    for point, by in idx.items():
        fused, kernel = by.get(BASELINE), by.get("kernel")
        if fused is None or kernel is None:
            continue
        rows.append({"op": fused["case"].removeprefix(OVERHEAD_KIND + "_"), "point": point,
                     "batch": fused["batch"], "seq": fused["seq"], "fused_us": fused["median_s"] * 1e6,
                     "kernel_us": kernel["median_s"] * 1e6,
                     "overhead_us": (fused["median_s"] - kernel["median_s"]) * 1e6,
                     "ran": ", ".join(f"{op}={v}" for op, v in sorted((fused.get("ran") or {}).items()))})
    return rows


def overhead_lines(records: list[dict]) -> list[str]:
    return [f"{r['point']:<40} fused {r['fused_us']:8.1f} µs  kernel {r['kernel_us']:8.1f} µs  "
            f"overhead {r['overhead_us']:8.1f} µs" for r in overhead_rows(records)]


def _overhead_section(records: list[dict]) -> list[str]:
    rows = overhead_rows(records)
    if not rows:
        return []
    lines = ["## Call overhead per op: median µs", "",
             "`fused` is the public `mbkernels.ops.<op>` call, `kernel` its C++ kernel function called directly on "
             "the same inputs, prepared beforehand (`bench/kernel_calls.py` says how); both under "
             "`torch.inference_mode()`. The difference is what the Python function, the hooks, the custom op's "
             "dispatch and the backend choice cost per call.", ""]
    lines += _table(["op", "B×S", "fused µs", "kernel µs", "fused − kernel µs", "ran inside fused"],
                    [[r["op"], f"{r['batch']}×{r['seq']}", f"{r['fused_us']:.1f}", f"{r['kernel_us']:.1f}",
                      f"{r['overhead_us']:.1f}", r["ran"] or "–"] for r in rows])
    return lines + [""]


# -- the report --------------------------------------------------------------------------------------

def _machine_section(meta: dict) -> list[str]:
    peaks = meta.get("peaks") or {}
    isas = ", ".join(meta.get("supported_isas") or []) or "–"
    fma = f"{_num(peaks.get('fma_fp32_gflops'), '.1f')} GFLOP/s"
    if (peaks.get("fma_cpu_share") or 1) < 0.99 and peaks.get("fma_fp32_gflops_wall"):
        fma += f" (per CPU-second × threads; {peaks['fma_fp32_gflops_wall']:.1f} over wall time)"
    n = peaks.get("matmul_n_cpu", "?")
    rows = [
        ["CPU", f"{meta.get('cpu_model', '?')} ({meta.get('cpu_count', '?')} logical CPUs)"],
        ["threads", str(meta.get("threads", "?"))],
        ["ISA (mbkernels kernels)", f"{meta.get('isa')} (supported: {isas})"],
        ["torch CPU capability / native bf16", f"{meta.get('torch_cpu_capability')} / {meta.get('cpu_native_bf16')}"],
        ["GPU", str(meta.get("gpu") or "none")],
        ["versions", ", ".join(f"{k} {meta.get(k)}" for k in ("mbkernels", "torch", "triton", "transformers",
                                                                  "onnxruntime", "python") if meta.get(k))],
        ["fp32 FMA peak (C++ loop, all threads)", fma],
        [f"fp32 matmul {n}³ (torch)", f"{_num(peaks.get('matmul_fp32_gflops'), '.1f')} GFLOP/s"],
        *([[f"int8 dot-product peak, {bits}-bit weights (C++ loop, all threads)",
            f"{peaks[key]:.1f} GOP/s"] for key, bits in (("int8_gops", 8), ("int8w7_gops", 7)) if peaks.get(key)]),
        [f"bf16 matmul {n}³ (torch)", f"{_num(peaks.get('matmul_bf16_gflops'), '.1f')} GFLOP/s"],
    ]
    for name in ("fp32", "bf16", "fp16"):
        if peaks.get(f"cuda_matmul_{name}_gflops"):
            rate = peaks[f"cuda_matmul_{name}_gflops"]
            rows.append([f"GPU {name} matmul {peaks.get('matmul_n_cuda')}³", f"{rate:.0f} GFLOP/s"])
    share = peaks.get("fma_cpu_share")
    if share is not None:
        busy = " — **the machine was busy: treat every number here as suspect**" if share < 0.9 else ""
        rows.append(["CPU share during the peak loop", f"{share:.2f}{busy}"])
    if meta.get("loadavg_at_start"):
        rows.append(["load average at start", ", ".join(f"{x:.2f}" for x in meta["loadavg_at_start"])])
    basis = peaks.get("basis") or {}
    if basis:
        rows.append(["% of peak divides by", "; ".join(f"{k}: {v['source']}" for k, v in basis.items())])
    rows.append(["grid / compile peer", f"{meta.get('level', '?')} / {meta.get('compile_style', '?')}"])
    if meta.get("datetime"):
        rows.append(["run", f"{meta['datetime']}" + (f", commit {meta['commit'][:10]}" if meta.get("commit") else "")])
    return ["## Machine", "", *_table(["", ""], rows, numbers=False), ""]


def _headline(records: list[dict]) -> list[str]:
    """The whole model, inference, fp32: median ms per provider, with fused's speedup over each peer."""
    lines = []
    for device in ("cpu", "cuda"):
        recs = [r for r in records if r["case"] == "model" and r["mode"] == "infer" and r["dtype"] == "fp32"
                and r["device"] == device and r.get("median_s")]
        if not recs:
            continue
        provs, idx = _providers(recs), _index(recs)
        rows = []
        for case, b, s in _rows(recs):
            fused = idx.get((case, b, s, BASELINE))
            cells = [f"{b}×{s}"]
            for p in provs:
                r = idx.get((case, b, s, p))
                if r is None:
                    cells.append("–")
                elif p == BASELINE or fused is None or p not in fused.get("ratios", {}):
                    cells.append(_ms(r["median_s"]))
                else:
                    cells.append(f"{_ms(r['median_s'])} ({fused['ratios'][p]:.2f}×)")
            rows.append(cells)
        lines += [f"## Headline: whole model ({recs[0].get('layers')} layers), {device}, fp32 inference, median ms", ""]
        lines += _table(["B×S"] + [PROVIDER_NAMES.get(p, p) for p in provs], rows)
        lines += ["", "In parentheses: peer median / fused median (> 1: fused is faster).", ""]
    return lines


def _section(key: tuple[str, str, str], recs: list[dict], plots: dict) -> list[str]:
    device, dtype, mode = key
    provs = _providers(recs)
    idx = _index(recs)
    rows = _rows(recs)
    names = [PROVIDER_NAMES.get(p, p) for p in provs]
    out = [f"## {device} · {dtype} · {MODE_NAMES.get(mode, mode)}", ""]

    def grid(cell) -> list[list[str]]:
        return [[_label(*k)] + [cell(idx.get((*k, p))) if idx.get((*k, p)) else "–" for p in provs] for k in rows]

    out += ["### Latency: median ms (IQR)", ""]
    out += _table(["case B×S"] + names, grid(lambda r: f"{_ms(r['median_s'])} ({_ms(r.get('iqr_s'))})"))
    out += ["", "### Throughput: GFLOP/s (% of peak)", ""]
    out += _table(["case B×S", "GFLOP/call"] + names,
                  [[row[0], _num((idx.get((*k, provs[0])) or {}).get("flops", 0) / 1e9)] + row[1:]
                   for k, row in zip(rows, grid(lambda r: "–" if not r.get("gflops") else
                                                f"{r['gflops']:.3g} ({_num(r.get('pct_peak'), '.1f')}%)"))])
    peers = [p for p in provs if p != BASELINE]
    if BASELINE in provs and peers:
        out += ["", "### Speedup of mbkernels fused: peer median / fused median (> 1: fused is faster)", ""]
        srows = []
        for k in rows:
            fused = idx.get((*k, BASELINE))
            srows.append([_label(*k)] + [f"{fused['ratios'][p]:.2f}×" if fused and p in fused.get("ratios", {})
                                         else "–" for p in peers])
        out += _table(["case B×S"] + [PROVIDER_NAMES.get(p, p) for p in peers], srows)
    if dtype.startswith("int8"):
        out += ["", "### Output error against the float32 reference (per-row relative error, `rel_err`)", ""]
        out += _table(["case B×S"] + names, grid(lambda r: _num(r.get("rel_err_vs_reference"), ".3g")))
    out += ["", "### Preparation, outside the timed region: seconds (build + export/compile + first call)", ""]
    out += _table(["case B×S"] + names, grid(lambda r: _num(r.get("prepare_s"))))
    if mode == "train":
        mem_key = "peak_mem_step_mb" if device == "cuda" else "peak_rss_step_mb"
        abs_key = "peak_mem_mb" if device == "cuda" else "peak_rss_mb"
        what = "max allocated" if device == "cuda" else "RSS"
        out += ["", f"### Training step memory: peak {what} above the pre-step level, MB (absolute peak)", ""]
        out += _table(["case B×S"] + names,
                      grid(lambda r: f"{_num(r.get(mem_key), '.0f')} ({_num(r.get(abs_key), '.0f')})"
                           if r.get(abs_key) is not None else "–"))
    fused_ran = {r["case"]: r.get("ran") for r in recs if r["provider"] == BASELINE and r.get("ran")}
    if fused_ran:
        out += ["", "What ran inside the fused provider (per op: C++ ISA, triton, or the reference where no "
                "kernel exists yet): " + "; ".join(f"{c}: " + ", ".join(f"{op}={v}" for op, v in sorted(ran.items()))
                                                   for c, ran in fused_ran.items()), ""]
    for title, path in plots.get(key, []):
        out += [f"![{title}]({path})", ""]
    return out


def _notes(records: list[dict]) -> list[str]:
    notes = {}
    for r in records:
        for k in ("compile", "exporter", "ort_spinning", "ort_threads", "hf_attn_implementation", "sdpa"):
            if r.get(k):
                notes.setdefault(k, r[k])
    lines = ["## How these numbers were taken", "",
             "- Every provider is timed on the call of a prepared module or op (weights loaded, packed, exported "
             "or compiled beforehand; that preparation is the table above), same inputs, same threads, "
             "one untimed first call plus warm-up calls, each provider in its own block.",
             "- Inference runs under `torch.inference_mode()` in eval mode; training is forward + backward of the "
             "first output with a fixed upstream gradient (dropout on, as in training).",
             "- FLOPs are analytic (`mbkernels.flops`: 2·M·N·K per GEMM incl. attention, elementwise work not "
             "counted, so norm-only cases show no GFLOP/s); training counts 3× the forward.",
             "- Weights: `mbkernels.testing.realistic_init_` (activations at the released checkpoint's 1e5–1e7 "
             "scale), plain random init for fp16. Layer/model inputs are full-length sequences."]
    lines += [f"- {k}: {v}" for k, v in notes.items()]
    return lines + [""]


def plot(records: list[dict], out_dir: Path, name: str) -> dict[tuple, list[tuple[str, str]]]:
    """Latency vs batch×sequence per provider (one PNG per device/dtype/mode) and fused's speedup
    over each peer (one heat map PNG per device/dtype). Returns section key → [(title, file name)]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    files: dict[tuple, list[tuple[str, str]]] = defaultdict(list)
    sections = _sections(records)
    colors = {p: f"C{i}" for i, p in enumerate(PROVIDER_ORDER)}
    for key, recs in sections.items():
        device, dtype, mode = key
        cases, provs, idx = _cases(recs), _providers(recs), _index(recs)
        sizes = sorted({(r["batch"], r["seq"]) for r in recs}, key=lambda bs: (bs[0] * bs[1], bs[1]))
        ncols = min(4, len(cases))
        nrows = math.ceil(len(cases) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
        for ax, case in zip(axes.flat, cases):
            ys = []
            for p in provs:
                pts = [(i, idx[(case, b, s, p)]["median_s"] * 1e3) for i, (b, s) in enumerate(sizes)
                       if (case, b, s, p) in idx]
                if pts:
                    ys += [y for _, y in pts]
                    ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", color=colors.get(p),
                            label=PROVIDER_NAMES.get(p, p), linewidth=2.2 if p == BASELINE else 1.2)
            if ys and max(ys) / min(ys) > 8:  # sizes spanning decades: log axis with 1-2-5 ticks
                ax.set_yscale("log")
                ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
                ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
                ax.yaxis.set_minor_formatter(NullFormatter())
                ax.set_ylabel("median ms (log)")
            else:  # a narrow range: linear from 0, so bar heights compare honestly
                ax.set_ylim(0, max(ys or [1]) * 1.15)
                ax.set_ylabel("median ms")
            ax.set_title(case)
            ax.set_xticks(range(len(sizes)), [f"{b}×{s}" for b, s in sizes])
            ax.set_xlim(-0.5, len(sizes) - 0.5)
            ax.set_xlabel("batch × sequence")
            ax.grid(True, which="major", alpha=0.3)
        for ax in list(axes.flat)[len(cases):]:
            ax.axis("off")
        handles = {h.get_label(): h for ax in axes.flat for h in ax.get_lines()}
        fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=len(handles), frameon=False)
        fig.suptitle(f"{name}: latency, {device} {dtype} {MODE_NAMES.get(mode, mode)}")
        fig.tight_layout(rect=(0, 0.06, 1, 0.95))
        fname = f"{name}-latency-{device}-{dtype}-{mode}.png"
        fig.savefig(out_dir / fname, dpi=110)
        plt.close(fig)
        files[key].append((f"latency {device} {dtype} {mode}", fname))

    by_dev: dict[tuple[str, str], list[tuple[str, str, str]]] = defaultdict(list)
    for key in sections:
        by_dev[key[:2]].append(key)
    for (device, dtype), keys in by_dev.items():
        panels = []
        for key in keys:
            recs = sections[key]
            idx, peers = _index(recs), [p for p in _providers(recs) if p != BASELINE]
            rows = [k for k in _rows(recs) if (*k, BASELINE) in idx]
            if rows and peers:
                panels.append((key, rows, peers, idx))
        if not panels:
            continue
        height = max(len(rows) for _, rows, _, _ in panels)
        width = sum(2.8 + 1.1 * len(peers) for _, _, peers, _ in panels)
        fig, axes = plt.subplots(1, len(panels), figsize=(width, max(3.2, 1.6 + 0.34 * height)), squeeze=False)
        for ax, (key, rows, peers, idx) in zip(axes.flat, panels):
            grid = [[idx[(*k, BASELINE)].get("ratios", {}).get(p, math.nan) for p in peers] for k in rows]
            logs = [[math.log2(v) if v == v and v > 0 else math.nan for v in row] for row in grid]
            lim = max([abs(v) for row in logs for v in row if v == v] + [0.1])
            im = ax.imshow(logs, cmap="RdBu", norm=TwoSlopeNorm(0.0, -lim, lim), aspect="auto")
            for i, row in enumerate(grid):
                for j, v in enumerate(row):
                    dark = v == v and abs(logs[i][j]) > 0.55 * lim
                    ax.text(j, i, "–" if v != v else f"{v:.2f}×", ha="center", va="center", fontsize=8,
                            color="white" if dark else "black")
            ax.set_xticks(range(len(peers)), [PROVIDER_NAMES.get(p, p) for p in peers], rotation=20, ha="right")
            ax.set_yticks(range(len(rows)), [_label(*k) for k in rows])
            ax.set_title(MODE_NAMES.get(key[2], key[2]))
            fig.colorbar(im, ax=ax, label="log2 speedup (blue: fused faster)", shrink=0.9)
        fig.suptitle(f"{name}: speedup of mbkernels fused over each peer, {device} {dtype}")
        fig.tight_layout()
        fname = f"{name}-speedup-{device}-{dtype}.png"
        fig.savefig(out_dir / fname, dpi=110)
        plt.close(fig)
        for key, *_ in panels:
            files[key].append((f"speedup {device} {dtype}", fname))
    return files


def write_report(records: list[dict], meta: dict, out_dir: str | Path, name: str | None = None) -> list[Path]:
    """Write `<out_dir>/<name>.md` and its PNGs; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or meta.get("machine") or "unknown-machine"
    plots = plot(records, out_dir, name)
    lines = [f"# mbkernels benchmarks: {name}", "",
             "Generated by `mbkernels bench-report` from pytest-benchmark JSON (`pytest bench/ --benchmark-only "
             "--benchmark-json=...`). Ratios compare providers measured in the same run.", ""]
    lines += _machine_section(meta)
    lines += _headline(records)
    for key, recs in _sections(records).items():
        lines += _section(key, recs, plots)
    lines += _overhead_section(records)
    lines += _notes(records)
    md = out_dir / f"{name}.md"
    md.write_text("\n".join(lines))
    written = [md] + sorted({out_dir / f for fs in plots.values() for _, f in fs})
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mbkernels bench-report", description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+",
                        help="pytest-benchmark JSON file(s) (--benchmark-json / --benchmark-autosave)")
    parser.add_argument("--out", default="bench/results", help="output folder (default: bench/results)")
    parser.add_argument("--name", default=None, help="report name (default: the machine recorded in the JSON)")
    args = parser.parse_args(argv)
    try:
        records, meta = load(args.json)
    except (OSError, ValueError) as e:
        parser.exit(2, f"mbkernels bench-report: {e}\n")
    for path in write_report(records, meta, args.out, args.name):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
