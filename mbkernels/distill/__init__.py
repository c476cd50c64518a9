"""mbkernels.distill: distil a MobileBERT student from a teacher, or pre-train a teacher.

Pieces, each small: `losses` (one function per loss), `strategies` (which losses and learning rates
are on at each step), `teacher` (our IB-BERT or any Hugging Face BERT-family model, layer and head
maps), `data` (streamed corpora, NSP pairs, masking, padding), `optim`, `checkpoint`, `distributed`,
and `trainer`, which puts them together. `mbkernels distill --help` runs it from the command line.
"""

from mbkernels.distill import losses, strategies
from mbkernels.distill.data import PretrainingStream, collate, corpus_files, load_tokenizer, write_corpus
from mbkernels.distill.teacher import HFTeacher, MobileBertTeacher, load_teacher, reduce_heads, uniform_layer_map
from mbkernels.distill.trainer import Distiller, TrainConfig, Trainer

__all__ = ["Distiller", "HFTeacher", "MobileBertTeacher", "PretrainingStream", "TrainConfig", "Trainer", "collate",
           "corpus_files", "load_teacher", "load_tokenizer", "losses", "reduce_heads", "strategies",
           "uniform_layer_map", "write_corpus"]
