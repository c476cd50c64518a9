"""Teachers, frozen and run without autograd, and how their layers and heads meet the student's.

`MobileBertTeacher` wraps one of our `MobileBertForPreTraining` models (the IB-BERT teacher, or any
preset) and returns pre-softmax attention scores. `HFTeacher` wraps any Hugging Face BERT-family
model (e.g. all-MiniLM-L6-v2), which returns post-softmax probabilities only: its attention maps are
their logarithm (see `losses.attention_loss`). A layer map pairs student layers with teacher layers;
`reduce_heads` brings the teacher's heads to the student's count.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import torch

from mbkernels.distill import forward
from mbkernels.heads import MobileBertForPreTraining


@dataclass
class TeacherOutput:
    hidden_states: list[torch.Tensor]       # [embeddings output, layer 1, …] as far as computed
    attention: list[torch.Tensor]           # per layer: [B, H, S, S] log-probabilities or masked scores
    mlm_logits: torch.Tensor | None = None  # [N, V] at the requested positions


class _FrozenTeacher:
    """What every teacher adapter holds: the frozen model and the sizes the layer map needs."""

    def __init__(self, model: torch.nn.Module, has_mlm_head: bool, name: str):
        self.model = model.eval().requires_grad_(False)
        self.config = model.config
        self.num_layers = model.config.num_hidden_layers
        self.hidden_size = model.config.hidden_size
        self.num_heads = model.config.num_attention_heads
        self.vocab_size = model.config.vocab_size
        self.has_mlm_head = has_mlm_head
        self.name = name

    def to(self, device: torch.device):
        self.model.to(device)
        return self


class MobileBertTeacher(_FrozenTeacher):
    """One of our models as the teacher (IB-BERT); its embeddings and heads can seed the student."""

    def __init__(self, model: MobileBertForPreTraining, has_mlm_head: bool = True, name: str = "teacher"):
        super().__init__(model, has_mlm_head, name)

    @torch.no_grad()
    def __call__(self, input_ids, attention_mask, token_type_ids, upto: int | None = None,
                 attention: bool = True, mlm_positions: torch.Tensor | None = None) -> TeacherOutput:
        if mlm_positions is not None:
            upto = None  # the MLM head reads the last layer
        hidden, scores = forward.encode(self.model, input_ids, attention_mask, token_type_ids, upto, attention)
        logits = forward.mlm_logits(self.model, hidden[-1], mlm_positions) if mlm_positions is not None else None
        return TeacherOutput(hidden, scores, logits)


class HFTeacher(_FrozenTeacher):
    """A Hugging Face BERT-family model as the teacher (attention from probabilities, in log space)."""

    def __init__(self, model: torch.nn.Module, has_mlm_head: bool, name: str = "teacher"):
        super().__init__(model, has_mlm_head, name)

    @torch.no_grad()
    def __call__(self, input_ids, attention_mask, token_type_ids, upto: int | None = None,
                 attention: bool = True, mlm_positions: torch.Tensor | None = None) -> TeacherOutput:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask.long(), token_type_ids=token_type_ids,
                         output_hidden_states=True, output_attentions=attention)
        hidden = list(out.hidden_states[: None if upto is None else upto + 1])
        attention = [a.log() for a in (out.attentions or ())[:upto]]
        logits = out.logits[mlm_positions] if mlm_positions is not None else None
        return TeacherOutput(hidden, attention, logits)


Teacher = MobileBertTeacher | HFTeacher

# Key fragments of MLM-head weights in BERT-family checkpoints (BERT, MobileBERT, RoBERTa-style).
_MLM_KEYS = ("cls.predictions.", "lm_head.", "predictions.decoder")


def load_teacher(source, device: torch.device | str = "cpu") -> Teacher:
    """A teacher from a folder (ours or any HF BERT-family, offline) or from a model object."""
    if isinstance(source, (MobileBertTeacher, HFTeacher)):
        return source.to(device)
    if isinstance(source, MobileBertForPreTraining):
        return MobileBertTeacher(source).to(device)
    if isinstance(source, torch.nn.Module):
        if not hasattr(source, "config"):
            raise TypeError(f"teacher: expected a folder, a MobileBertForPreTraining or a transformers model, "
                            f"got {type(source).__name__}")
        return HFTeacher(source, has_mlm_head=source.get_output_embeddings() is not None,
                         name=type(source).__name__).to(device)
    folder = os.fspath(source)
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"teacher: expected a folder with config.json and weights, got {folder!r}")
    with open(config_path) as f:
        model_type = json.load(f).get("model_type")
    from mbkernels.hf import load_state_dict

    keys = list(load_state_dict(folder))
    has_mlm = any(frag in k for k in keys for frag in _MLM_KEYS)
    if model_type == "mobilebert":
        model = MobileBertForPreTraining.from_pretrained(folder)
        return MobileBertTeacher(model, has_mlm_head=has_mlm, name=folder).to(device)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    auto = transformers.AutoModelForMaskedLM if has_mlm else transformers.AutoModel
    model = auto.from_pretrained(folder, attn_implementation="eager")
    return HFTeacher(model, has_mlm_head=has_mlm, name=folder).to(device)


# -- layers and heads ----------------------------------------------------------------------------------

def uniform_layer_map(student_layers: int, teacher_layers: int) -> dict[int, int]:
    """Student layer j ↔ teacher layer ⌈j·T/S⌉ (1-based): identity when equal, every k-th teacher
    layer when the teacher is k times deeper (TinyBERT), many-to-one when the student is deeper."""
    return {j: math.ceil(j * teacher_layers / student_layers) for j in range(1, student_layers + 1)}


def parse_layer_map(spec: str) -> dict[int, int]:
    """"1:2,2:4" → {1: 2, 2: 4} (student layer : teacher layer, 1-based)."""
    pairs = {}
    for item in spec.split(","):
        try:
            s, t = (int(x) for x in item.split(":"))
        except ValueError:
            raise ValueError(f"layer_map: expected 'student:teacher' pairs like '1:2,2:4', got {spec!r}") from None
        if s in pairs:
            raise ValueError(f"layer_map: student layer {s} is listed twice in {spec!r}")
        pairs[s] = t
    return pairs


def check_layer_map(layer_map: dict[int, int], student_layers: int, teacher_layers: int) -> dict[int, int]:
    for s, t in layer_map.items():
        if not 1 <= s <= student_layers or not 1 <= t <= teacher_layers:
            raise ValueError(f"layer_map: pair {s}:{t} is out of range (student layers 1..{student_layers}, "
                             f"teacher layers 1..{teacher_layers})")
    return dict(sorted(layer_map.items()))


def reduce_heads(log_probs: torch.Tensor, student_heads: int, head_map: list[int] | None = None) -> torch.Tensor:
    """Teacher attention `[B, Ht, S, S]` (log space) → `[B, student_heads, S, S]`.

    `head_map[i]` picks the teacher head for student head i; otherwise equal counts match one to one
    and a teacher with k times as many heads is averaged over groups of k consecutive heads (the mean
    of the probabilities, kept in log space).
    """
    teacher_heads = log_probs.shape[1]
    if head_map is not None:
        if len(head_map) != student_heads or not all(0 <= h < teacher_heads for h in head_map):
            raise ValueError(f"head_map: expected {student_heads} teacher head indices in 0..{teacher_heads - 1}, "
                             f"got {list(head_map)}")
        return log_probs[:, list(head_map)]
    if teacher_heads == student_heads:
        return log_probs
    if teacher_heads % student_heads:
        raise ValueError(f"head_map: the teacher has {teacher_heads} heads and the student {student_heads}, "
                         "which does not divide; give a head_map (one teacher head per student head)")
    g = teacher_heads // student_heads
    b, _, s, k = log_probs.shape
    log_probs = torch.log_softmax(log_probs.float(), dim=-1)  # scores → log-probabilities (idempotent)
    return torch.logsumexp(log_probs.view(b, student_heads, g, s, k), dim=2) - math.log(g)
