"""The `mbkernels` command: `info`, `demo`, and the subcommands of the other parts of the package.

Subcommands that belong to another module (bench-report, distill, …) forward their arguments to
that module's `main(argv)`, imported only when used, so `mbkernels info` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

# name -> (module with main(argv) -> int, or "module:function", one-line help)
FORWARDED = {
    "bench-report": ("mbkernels.bench_report", "turn saved pytest-benchmark JSON into bench/results/*.md and plots"),
    "distill": ("mbkernels.distill.cli", "distil a MobileBERT student from a teacher (or pre-train a teacher)"),
    "finetune": ("mbkernels.finetune.cli:finetune_main", "fine-tune a model on a GLUE, CSV/JSONL or SQuAD task"),
    "evaluate": ("mbkernels.finetune.cli:evaluate_main", "score a fine-tuned model; writes predictions and metrics"),
    "quantize": ("mbkernels.quantize_cli", "an int8 copy of a saved model (SmoothQuant-calibrated on a text file)"),
}


def _print_info() -> int:
    from mbkernels import info

    d = info()
    ops = d.pop("ops")
    width = max(map(len, d))
    for k, v in d.items():
        print(f"{k:<{width}}  {v if not isinstance(v, list) else ', '.join(v) or '-'}")
    print("\nop                     cpu                                  cuda")
    for name, where in ops.items():
        print(f"{name:<22} {where['cpu']:<36} {where['cuda']}")
    return 0


def _int_in(low: int, high: int | None = None):
    """An argparse type: an int in [low, high] (argparse turns the error into exit 2 naming the option)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < low or (high is not None and value > high):
            bounds = f"in [{low}, {high}]" if high else f">= {low}"
            raise argparse.ArgumentTypeError(f"expected an integer {bounds}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in FORWARDED:
        module, _, function = FORWARDED[argv[0]][0].partition(":")
        return int(getattr(importlib.import_module(module), function or "main")(argv[1:]) or 0)
    parser = argparse.ArgumentParser(prog="mbkernels", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="versions, ISAs, devices and the backend of every op")
    p_info.add_argument("--json", action="store_true", help="print the dict as JSON")
    p_demo = sub.add_parser("demo", help="check every op against the reference and time the model")
    p_demo.add_argument("--layers", type=_int_in(1), default=24, help="encoder layers (default: 24, the real model)")
    p_demo.add_argument("--batch", type=_int_in(1), default=1)
    p_demo.add_argument("--seq", type=_int_in(1, 512), default=128, help="tokens (1..512, the position table)")
    p_demo.add_argument("--repeats", type=_int_in(1), default=10, help="timed calls per provider")
    for name, (_, help_) in FORWARDED.items():
        sub.add_parser(name, help=help_, add_help=False)
    args = parser.parse_args(argv)
    if args.command == "info":
        if args.json:
            from mbkernels import info

            print(json.dumps(info(), indent=2))
            return 0
        return _print_info()
    if args.command == "demo":
        from mbkernels.demo import run_demo

        return run_demo(layers=args.layers, batch=args.batch, seq=args.seq, repeats=args.repeats)
    return 2


if __name__ == "__main__":
    sys.exit(main())
