"""Two pytest-benchmark runs side by side (e.g. the commit before a change and the one after, on the
same machine): per point the median and IQR of each, their ratio, and whether the later median
falls beyond the earlier run's IQR (slower or faster), plus, for the overhead cases, the public op's
cost beyond its kernel (fused - kernel).

    python -m bench.compare before.json after.json --labels before after > comparison.md
"""

from __future__ import annotations

import argparse
import json


def _points(path: str) -> dict[str, dict]:
    data = json.load(open(path))
    return {b["name"].removeprefix("test_bench[").removesuffix("]"): b["stats"] for b in data["benchmarks"]}, data


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs" if seconds < 1e-2 else f"{seconds * 1e3:,.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--labels", nargs=2, default=("before", "after"))
    a = ap.parse_args()
    (old, old_data), (new, new_data) = _points(a.before), _points(a.after)
    b, n = a.labels
    cpu = new_data.get("machine_info", {}).get("cpu", {}).get("brand_raw", "?")
    print(f"# {b} vs {n}\n\nMachine: {cpu}; one pytest-benchmark run each, back to back.\n")
    print(f"| point | {b} median (IQR) | {n} median (IQR) | {n}/{b} | verdict |")
    print("|---|---|---|---|---|")
    for key in sorted(set(old) & set(new)):
        o, w = old[key], new[key]
        lo, hi = o["q1"], o["q3"]
        verdict = "slower" if w["median"] > hi else "faster" if w["median"] < lo else "same (within IQR)"
        print(f"| {key} | {_us(o['median'])} ({_us(o['iqr'])}) | {_us(w['median'])} ({_us(w['iqr'])}) | "
              f"{w['median'] / o['median']:.2f} | {verdict} |")
    print(f"\n## Call overhead per op (fused - kernel, medians)\n\n| op | {b} | {n} |\n|---|---|---|")
    ops = sorted({k.split("-")[0].removeprefix("overhead_") for k in new if k.startswith("overhead_")})
    for op in ops:
        cells = []
        for pts in (old, new):
            f = next((v for k, v in pts.items() if k.startswith(f"overhead_{op}-") and k.endswith("-fused")), None)
            k_ = next((v for k, v in pts.items() if k.startswith(f"overhead_{op}-") and k.endswith("-kernel")), None)
            cells.append(f"{_us(f['median'] - k_['median'])} ({_us(f['median'])} - {_us(k_['median'])})"
                         if f and k_ else "n/a")
        print(f"| {op} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
