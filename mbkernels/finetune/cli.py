"""`mbkernels finetune` and `mbkernels evaluate`: fine-tune a model on a task and score it.

Examples:
  mbkernels finetune --model runs/student/model --task sst2 --glue-dir glue_data --output-dir runs/sst2
  mbkernels evaluate --model runs/sst2/model --task sst2 --glue-dir glue_data --split dev --output-dir runs/sst2/dev
  mbkernels finetune --model runs/student/model --task reviews --kind classification --labels neg,pos \\
      --train train.csv --dev dev.csv --text-column review --output-dir runs/reviews
  mbkernels finetune --model runs/student/model --task squad --kind question_answering \\
      --train train-v1.1.json --dev dev-v1.1.json --max-seq-len 384 --doc-stride 128 --output-dir runs/squad

--model is a folder: ours (from `mbkernels distill`), a Hugging Face MobileBERT folder, or any Hugging
Face model (e.g. a BERT teacher to compare with). The fine-tuned model is saved in Hugging Face format
in OUTPUT/model with its vocab.txt and task.json, so `evaluate` needs only --model and the data.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import asdict

from mbkernels.backend import BACKENDS
from mbkernels.finetune.tasks import GLUE, KINDS, Task
from mbkernels.finetune.trainer import PRECISIONS, FinetuneConfig

EPILOG = "\n".join(__doc__.splitlines()[2:])


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="folder with config.json and weights")
    p.add_argument("--task", required=True, help=f"a GLUE task ({', '.join(GLUE)}) or a name for your own data")
    p.add_argument("--kind", choices=KINDS, default=None, help="your own task's kind (GLUE tasks know theirs)")
    p.add_argument("--labels", default=None, help="your own task's label names in id order, comma separated")
    p.add_argument("--glue-dir", default=None, help="GLUE data: glue_data/ or the task's folder in it")
    p.add_argument("--text-column", default="text", help="CSV/JSONL: the text (token tasks: the words)")
    p.add_argument("--pair-column", default=None, help="CSV/JSONL: the second text of a pair")
    p.add_argument("--label-column", default="label", help="CSV/JSONL: the label (token tasks: the tags)")
    p.add_argument("--tokenizer", default=None, help="folder with vocab.txt (default: the model's)")
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--doc-stride", type=int, default=128, help="QA: tokens between window starts")
    p.add_argument("--max-query-len", type=int, default=64, help="QA: question tokens kept")
    p.add_argument("--max-answer-len", type=int, default=30, help="QA: longest predicted span, in tokens")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="bf16: autocast")
    p.add_argument("--backend", choices=BACKENDS, default="fused")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--output-dir", required=True)


def finetune_parser() -> argparse.ArgumentParser:
    d = FinetuneConfig.__dataclass_fields__
    p = argparse.ArgumentParser(prog="mbkernels finetune", description=__doc__.splitlines()[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("--train", default=None, help="training file: CSV, JSONL, or SQuAD JSON (QA)")
    p.add_argument("--dev", default=None, help="dev file for evaluation, model selection and early stopping")
    p.add_argument("--epochs", type=float, default=d["epochs"].default)
    p.add_argument("--max-steps", type=int, default=0, help="step budget (instead of epochs)")
    p.add_argument("--lr", type=float, default=d["lr"].default)
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"].default)
    p.add_argument("--warmup", type=float, default=d["warmup"].default, help="warm-up fraction of all steps")
    p.add_argument("--clip", type=float, default=d["clip"].default)
    p.add_argument("--eval-every", type=int, default=0, help="steps between dev evaluations (0: every epoch)")
    p.add_argument("--patience", type=int, default=0, help="stop after N evaluations without gain (0: never)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p


def evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mbkernels evaluate", description="score a fine-tuned model; writes "
                                "predictions.jsonl and metrics.json to --output-dir", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("--data", default=None, help="CSV, JSONL or SQuAD JSON file (instead of --glue-dir/--split)")
    p.add_argument("--split", default="dev", help="GLUE split (MNLI: dev_matched, dev_mismatched, …)")
    return p


def _task(args) -> Task:
    saved = os.path.join(args.model, "task.json")
    if args.task in GLUE and args.kind is None:
        return GLUE[args.task]
    if args.kind is None and os.path.isfile(saved):
        with open(saved) as f:
            d = json.load(f)
        return Task(d["name"], d["kind"], tuple(d["labels"]), tuple(d["metrics"]))
    if args.kind is None:
        raise ValueError(f"kind: {args.task!r} is not a GLUE task; give --kind (one of {KINDS}) and --labels")
    labels = tuple(args.labels.split(",")) if args.labels else ()
    return Task(args.task, args.kind, labels)


def _examples(args, task: Task, path: str | None, split: str):
    from mbkernels.finetune.data import load_glue, load_table
    from mbkernels.finetune.qa import load_squad

    if path is None and args.glue_dir and task.name in GLUE:
        return load_glue(args.glue_dir, task.name, split)
    if path is None:
        raise ValueError(f"data: expected --glue-dir for a GLUE task or a file for the {split} split, got neither")
    if task.kind == "question_answering":
        return load_squad(path)
    return load_table(path, task, args.text_column, args.pair_column, args.label_column)


def _features(args, task: Task, examples, tokenizer):
    from mbkernels.finetune.data import encode
    from mbkernels.finetune.qa import encode_squad

    if task.kind == "question_answering":
        return encode_squad(examples, tokenizer, args.max_seq_len, args.doc_stride, args.max_query_len)
    return encode(examples, tokenizer, task, args.max_seq_len)


def _tokenizer(args):
    from mbkernels.distill.data import load_tokenizer

    return load_tokenizer(args.tokenizer or args.model)


def _run(fn, args) -> int:
    try:
        return fn(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _finetune(args) -> int:
    from mbkernels.finetune.evaluate import evaluate
    from mbkernels.finetune.tasks import load_model
    from mbkernels.finetune.trainer import finetune

    task = _task(args)
    tokenizer = _tokenizer(args)
    train = _examples(args, task, args.train, "train")
    dev = None
    if args.dev or (args.glue_dir and task.name in GLUE):
        dev_split = "dev_matched" if task.name == "mnli" else "dev"
        dev_examples = _examples(args, task, args.dev, dev_split)
        dev = (dev_examples, _features(args, task, dev_examples, tokenizer))
    config = FinetuneConfig(
        output_dir=args.output_dir, epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
        lr=args.lr, weight_decay=args.weight_decay, warmup=args.warmup, clip=args.clip, eval_every=args.eval_every,
        patience=args.patience, precision=args.precision, backend=args.backend, device=args.device, seed=args.seed,
        progress=not args.no_progress,
        extra={"max_answer_len": args.max_answer_len} if task.kind == "question_answering" else {})
    model = load_model(args.model, task)
    result = finetune(model, task, _features(args, task, train, tokenizer), config, dev)
    folder = os.path.join(args.output_dir, "model")
    vocab = os.path.join(args.tokenizer or args.model, "vocab.txt")
    if os.path.isfile(vocab):
        shutil.copyfile(vocab, os.path.join(folder, "vocab.txt"))
    with open(os.path.join(folder, "task.json"), "w") as f:
        json.dump(asdict(task), f, indent=2)
    if dev is not None:
        evaluate(model, task, *dev, backend=args.backend, precision=args.precision,
                 output_dir=os.path.join(args.output_dir, "dev"), **config.extra)
    print(json.dumps({"steps": result.steps, "seconds": round(result.seconds, 1), "best_dev": result.best,
                      "best_step": result.best_step, "model": folder}))
    return 0


def _evaluate(args) -> int:
    from mbkernels.finetune.evaluate import evaluate
    from mbkernels.finetune.tasks import load_model

    task = _task(args)
    examples = _examples(args, task, args.data, args.split)
    features = _features(args, task, examples, _tokenizer(args))
    model = load_model(args.model, task)
    qa = {"max_answer_len": args.max_answer_len} if task.kind == "question_answering" else {}
    result = evaluate(model, task, examples, features, args.batch_size, args.backend, args.precision,
                      output_dir=args.output_dir, **qa)
    print(json.dumps({"task": task.name, "examples": len(examples), **result}))
    return 0


def finetune_main(argv: list[str] | None = None) -> int:
    return _run(_finetune, finetune_parser().parse_args(sys.argv[1:] if argv is None else argv))


def evaluate_main(argv: list[str] | None = None) -> int:
    return _run(_evaluate, evaluate_parser().parse_args(sys.argv[1:] if argv is None else argv))
