"""`mbkernels distill`: pre-train a teacher or distil a student from the command line.

Examples:
  mbkernels distill --strategy pretrain --student ib_bert_large --set num_hidden_layers=4 \\
      --corpus news.txt --tokenizer VOCAB_DIR --steps 1000 --output-dir runs/teacher
  mbkernels distill --strategy progressive --teacher runs/teacher/model --student mobilebert \\
      --set num_hidden_layers=4 --corpus news.txt --tokenizer VOCAB_DIR --layer-steps 500 --steps 2000 \\
      --output-dir runs/student
  torchrun --standalone --nproc_per_node=2 -m mbkernels.cli distill ...   (data parallel, gloo on CPU)
"""

from __future__ import annotations

import argparse
import json
import sys

from mbkernels.backend import BACKENDS
from mbkernels.distill import strategies
from mbkernels.distill.optim import OPTIMIZERS
from mbkernels.distill.trainer import PRECISIONS, PRESETS, WEIGHTS, TrainConfig


def _key_values(items: list[str], arg: str) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"mbkernels distill: {arg}: expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def parser() -> argparse.ArgumentParser:
    d = TrainConfig.__dataclass_fields__
    p = argparse.ArgumentParser(prog="mbkernels distill", description=__doc__.splitlines()[0],
                                epilog="\n".join(__doc__.splitlines()[2:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("run")
    g.add_argument("--strategy", choices=strategies.STRATEGIES, default=d["strategy"].default,
                   help="pretrain: MLM+NSP without a teacher (train an IB-BERT teacher); auxiliary: layer and "
                        "MLM/NSP losses together; joint: layer losses then stage 2; progressive: one phase per "
                        "layer then stage 2 (default: %(default)s)")
    g.add_argument("--output-dir", required=True, help="checkpoints/, metrics.jsonl and the final model/")
    g.add_argument("--steps", type=int, default=0,
                   help="pretrain/auxiliary: all steps; joint/progressive: stage-2 steps (0: no stage 2)")
    g.add_argument("--layer-steps", type=int, default=0,
                   help="progressive: steps per layer phase; joint: steps of the layer-wise stage")
    g.add_argument("--stop-after", type=int, default=None, help="stop (with a checkpoint) at this global step")
    g.add_argument("--resume", default="auto", help="'auto' (newest checkpoint in output-dir), 'never', or a file")
    g.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (default: only at the end)")
    g.add_argument("--keep-checkpoints", type=int, default=d["keep_checkpoints"].default)
    g.add_argument("--log-every", type=int, default=1, help="steps between metrics.jsonl lines")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("models")
    g.add_argument("--student", default=d["student"].default,
                   help=f"a preset ({', '.join(PRESETS)}), a config.json, or a folder (default: %(default)s)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a student config field, e.g. --set num_hidden_layers=4")
    g.add_argument("--teacher", default=None, help="teacher folder: ours (IB-BERT) or any HF BERT-family model")
    g.add_argument("--layer-map", default=None, help="student:teacher layer pairs, 1-based, e.g. 1:2,2:4 "
                                                     "(default: uniform, student j ↔ teacher ⌈j·T/S⌉)")
    g.add_argument("--head-map", default=None, help="teacher head for each student head, e.g. 0,3,6,9 "
                                                    "(default: one to one, or averages of head groups)")
    g.add_argument("--no-copy-from-teacher", action="store_true",
                   help="do not copy embeddings and heads from the teacher")
    g.add_argument("--project-embeddings", action="store_true",
                   help="HF teacher: initialise the student's embeddings from the teacher's through a PCA")
    g = p.add_argument_group("losses")
    g.add_argument("--weight", action="append", default=[], metavar="NAME=VALUE",
                   help=f"loss weight (0 turns it off); defaults {WEIGHTS}")
    g.add_argument("--alpha", type=float, default=0.5, help="teacher share of the MLM target (default: 0.5)")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--mask-padding", action="store_true",
                   help="average layer losses over real tokens only (default: padding counts, as Google's code)")
    g = p.add_argument_group("optimization")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=d["optimizer"].default)
    g.add_argument("--lr", type=float, default=d["lr"].default)
    g.add_argument("--weight-decay", type=float, default=d["weight_decay"].default)
    g.add_argument("--warmup", type=float, default=d["warmup"].default, help="warm-up fraction of each phase")
    g.add_argument("--decay", choices=strategies.DECAYS, default=d["decay"].default)
    g.add_argument("--clip", type=float, default=d["clip"].default, help="max global gradient norm (0: off)")
    g.add_argument("--during", type=float, default=3.0, help="progressive: lr multiplier of the layer in its phase")
    g.add_argument("--after", type=float, default=0.3, help="progressive: lr multiplier of finished layers")
    g.add_argument("--freeze-finished", action="store_true", help="progressive: freeze finished layers instead")
    g.add_argument("--batch-size", type=int, default=d["batch_size"].default, help="global batch per step")
    g.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step and rank")
    g.add_argument("--precision", choices=PRECISIONS, default="fp32", help="bf16: autocast")
    g.add_argument("--dropout", choices=("auto", "on", "off"), default="auto",
                   help="student dropout (auto: on when pre-training, off when distilling)")
    g.add_argument("--backend", choices=BACKENDS, default="fused")
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    g = p.add_argument_group("data")
    g.add_argument("--corpus", nargs="+", required=True,
                   help="text files or folders: one sentence per line, blank line between documents")
    g.add_argument("--tokenizer", required=True, help="folder with vocab.txt (WordPiece), or the file")
    g.add_argument("--max-seq-len", type=int, default=d["max_seq_len"].default)
    g.add_argument("--pad-to-multiple-of", type=int, default=8)
    g.add_argument("--mask-prob", type=float, default=0.15)
    g.add_argument("--nsp-prob", type=float, default=0.5, help="share of random second segments")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    head_map = [int(h) for h in args.head_map.split(",")] if args.head_map else None
    weights = {k: float(v) for k, v in _key_values(args.weight, "--weight").items()}
    return TrainConfig(
        corpus=args.corpus, tokenizer=args.tokenizer, output_dir=args.output_dir, strategy=args.strategy,
        student=args.student, student_overrides=_key_values(args.set, "--set"), teacher=args.teacher,
        steps=args.steps, layer_steps=args.layer_steps, layer_map=args.layer_map, head_map=head_map,
        copy_from_teacher=not args.no_copy_from_teacher, project_embeddings=args.project_embeddings, during=args.during, after=args.after,
        freeze_finished=args.freeze_finished, weights=weights, alpha=args.alpha, temperature=args.temperature,
        count_padding=not args.mask_padding, optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
        warmup=args.warmup, decay=args.decay, clip=args.clip, batch_size=args.batch_size, grad_accum=args.grad_accum,
        max_seq_len=args.max_seq_len, pad_to_multiple_of=args.pad_to_multiple_of, mask_prob=args.mask_prob,
        nsp_prob=args.nsp_prob, dropout={"auto": None, "on": True, "off": False}[args.dropout],
        precision=args.precision, backend=args.backend, device=args.device, seed=args.seed,
        save_every=args.save_every, keep_checkpoints=args.keep_checkpoints, resume=args.resume,
        log_every=args.log_every, progress=not args.no_progress)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = config_from_args(args)
        from mbkernels.distill.trainer import Trainer

        trainer = Trainer(config)
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"mbkernels distill: error: {e}", file=sys.stderr)
        return 2
    metrics = trainer.fit(until=args.stop_after)
    if trainer.is_main:
        done = trainer.global_step == trainer.schedule.total_steps
        print(json.dumps({"step": trainer.global_step, "total_steps": trainer.schedule.total_steps,
                          "finished": done, "loss": metrics.get("loss"),
                          "model": f"{config.output_dir}/model" if done else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
