"""`mbkernels quantize`: a saved float32 model folder -> an int8 folder (mbkernels/quantize.py).

    mbkernels quantize --model DIR --calibration TEXT --output DIR [--tokenizer DIR]

The calibration text is read one example per line (blank lines skipped); its first `--samples`
lines, tokenized as the model will see its inputs ([CLS] text [SEP], at most `--max-seq-len`
tokens), give SmoothQuant the range of each layer's input. The output folder loads with
`<Class>.from_pretrained` and runs in `mobilebert_run`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mbkernels quantize", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="folder with config.json and float32 weights")
    p.add_argument("--calibration", default=None, help="text file, one example per line (omit: no smoothing)")
    p.add_argument("--output", required=True, help="folder to write the int8 model to")
    p.add_argument("--tokenizer", default=None, help="folder with vocab.txt (default: the model's)")
    p.add_argument("--samples", type=int, default=256, help="calibration lines used (default: 256)")
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--smooth-alpha", type=float, default=0.3, help="SmoothQuant's migration strength in [0, 1]")
    p.add_argument("--weight-bits", type=int, choices=(7, 8), default=8,
                   help="8, or 7 for the faster kernel of AVX2 CPUs without VNNI (default: 8)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _model_class(folder: str):
    import mbkernels
    from mbkernels.hf import CLASS_NAMES

    with open(os.path.join(folder, "config.json")) as f:
        names = json.load(f).get("architectures") or ["MobileBertModel"]
    return getattr(mbkernels, names[0]) if names[0] in CLASS_NAMES else mbkernels.MobileBertModel


def calibration_batches(path: str, tokenizer, samples: int, max_seq_len: int, batch_size: int) -> list[dict]:
    """The first `samples` non-blank lines of `path` as right-padded batches (fine-tuning's `collate`)."""
    from mbkernels.finetune.data import Feature, collate

    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()][:samples]
    if not lines:
        raise ValueError(f"calibration: expected text lines in {path!r}, found none")
    tokenizer.enable_truncation(max_seq_len)
    features = [Feature(e.ids, [0] * len(e.ids), None, i) for i, e in enumerate(tokenizer.encode_batch(lines))]
    return [collate(features[start:start + batch_size]) for start in range(0, len(features), batch_size)]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _quantize(args)
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _quantize(args) -> int:
    from mbkernels.quantize import quantize

    if not 0.0 <= args.smooth_alpha <= 1.0:
        raise ValueError(f"--smooth-alpha: expected a float in [0, 1], got {args.smooth_alpha}")
    if args.samples < 1 or args.batch_size < 1 or args.max_seq_len < 2:
        raise ValueError("--samples and --batch-size: expected >= 1, --max-seq-len >= 2")
    if not os.path.isfile(os.path.join(args.model, "config.json")):
        raise FileNotFoundError(f"--model: expected a folder with config.json, got {args.model!r}")
    model = _model_class(args.model).from_pretrained(args.model)
    calibration = None
    if args.calibration is not None:
        from mbkernels.distill.data import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer or args.model)
        calibration = calibration_batches(args.calibration, tokenizer, args.samples, args.max_seq_len,
                                          args.batch_size)
        if not args.no_progress:
            from tqdm import tqdm

            calibration = tqdm(calibration, desc="calibrating", unit="batch")
    quantize(model, calibration, smooth_alpha=args.smooth_alpha, weight_bits=args.weight_bits,
             progress=not args.no_progress)
    model.save_pretrained(args.output)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        source = os.path.join(args.tokenizer or args.model, name)
        if os.path.isfile(source):
            shutil.copyfile(source, os.path.join(args.output, name))
    print(f"wrote the int8 model to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
