"""mbkernels.finetune: fine-tune a (distilled) MobileBERT on a downstream task and evaluate it.

Pieces: `tasks` (what is predicted, the GLUE tasks, the model for a task), `data` (GLUE TSV, CSV and
JSONL loaders, encoding, batches), `qa` (SQuAD loader, document windows, span decoding), `metrics`
(GLUE's and SQuAD's definitions), `trainer` (the fine-tuning loop) and `evaluate` (predictions,
metrics, files). `mbkernels finetune --help` and `mbkernels evaluate --help` run them.
"""

from mbkernels.finetune.data import Example, Feature, batches, collate, encode, load_glue, load_table
from mbkernels.finetune.evaluate import evaluate, predict
from mbkernels.finetune.metrics import compute as compute_metrics
from mbkernels.finetune.qa import SquadExample, encode_squad, load_squad
from mbkernels.finetune.tasks import GLUE, Task, load_model
from mbkernels.finetune.trainer import FinetuneConfig, FinetuneResult, finetune, set_seed

__all__ = ["GLUE", "Example", "Feature", "FinetuneConfig", "FinetuneResult", "SquadExample", "Task", "batches",
           "collate", "compute_metrics", "encode", "encode_squad", "evaluate", "finetune", "load_glue",
           "load_model", "load_squad", "load_table", "predict", "set_seed"]
