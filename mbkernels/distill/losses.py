"""The distillation losses, each a plain function returning a mean (REFERENCE "Distillation recipe").

`mask` arguments are `[B, S]` bools (True = a real token) or None. None averages over every position,
padding included — Google's choice and the default of the trainer; a mask averages over real tokens
only (TextBrewer's choice). `counted(mask, shape)` gives the number of positions a loss averages over,
which the trainer uses to weight micro-batches into one global mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # label of the positions the MLM loss skips (HF's convention)


def standardize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """LayerNorm without affine parameters over the last dimension (TF's variance epsilon)."""
    return F.layer_norm(x, x.shape[-1:], eps=eps)


def _masked_mean(per_position: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of a `[B, S]` tensor over all positions, or over the True positions of `mask`."""
    if mask is None:
        return per_position.mean()
    if mask.shape != per_position.shape:
        raise ValueError(f"mask: expected shape {tuple(per_position.shape)}, got {tuple(mask.shape)}")
    m = mask.to(per_position.dtype)
    return (per_position * m).sum() / m.sum().clamp_min(1)


def counted(mask: torch.Tensor | None, shape: tuple[int, int]) -> int:
    """How many `[B, S]` positions a layer loss averages over."""
    return int(shape[0] * shape[1]) if mask is None else int(mask.sum())


def feature_map_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between per-token standardized `[B, S, D]` layer outputs, averaged over positions and D."""
    if student.shape != teacher.shape:
        raise ValueError(f"feature_map_loss: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
                         "differ (project the student to the teacher's width first)")
    diff = standardize(student.float()) - standardize(teacher.float())
    return _masked_mean(diff.pow(2).mean(-1), mask)


def attention_loss(student_scores: torch.Tensor, teacher_scores: torch.Tensor,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(teacher ‖ student) of the attention distributions, per head and query row, averaged.

    Both inputs are `[B, H, S, S]` pre-softmax masked scores (masked keys at a large negative value)
    or log-probabilities (log of a teacher's post-softmax output, -inf at masked keys): the softmax of
    a log-probability row is the row itself, so both forms give the same loss. Google's code uses the
    cross-entropy, which differs from this KL by the teacher's entropy (a constant); the KL is 0 when
    the distributions agree. `mask` selects the query rows that count.
    """
    if student_scores.shape != teacher_scores.shape:
        raise ValueError(f"attention_loss: student {tuple(student_scores.shape)} and teacher "
                         f"{tuple(teacher_scores.shape)} differ (map the teacher's heads to the student's first)")
    log_s = torch.log_softmax(student_scores.float(), dim=-1)
    log_t = torch.log_softmax(teacher_scores.float(), dim=-1)
    p_t = log_t.exp()
    # Masked keys have p_t = 0 and log_t = -inf (or ~finfo.min): their terms are 0, never NaN.
    kl = torch.where(p_t > 0, p_t * (log_t - log_s), torch.zeros_like(p_t)).sum(-1)  # [B, H, S]
    return _masked_mean(kl.mean(1), mask)


def mean_variance_loss(student: torch.Tensor, teacher: torch.Tensor,
                       mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(squared difference of per-token means, |difference| of per-token variances), each averaged.

    Layer against layer (Google's TF1 code compared each student layer with the stacked statistics of
    all teacher layers; its TF2 port compares layer with layer, as here). Variances are biased (1/D).
    """
    if student.shape != teacher.shape:
        raise ValueError(f"mean_variance_loss: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ")
    s, t = student.float(), teacher.float()
    mean = (s.mean(-1) - t.mean(-1)).pow(2)
    var = (s.var(-1, unbiased=False) - t.var(-1, unbiased=False)).abs()
    return _masked_mean(mean, mask), _masked_mean(var, mask)


def mlm_distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
                          labels: torch.Tensor, alpha: float = 0.5, temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy against `alpha`·softmax(teacher/T) + (1−alpha)·one-hot(label), per masked token.

    `student_logits`, `teacher_logits`: `[N, V]` at the predicted positions; `labels`: `[N]` with
    IGNORE_INDEX where nothing is predicted. The soft term uses temperature T on both sides and is
    scaled by T² (Hinton et al.) so its gradient does not shrink with T; at T = 1 this is exactly
    Google's mixed target (0.5 / 0.5 in the recipe). `alpha = 0` (or no teacher) is plain MLM.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a weight in [0, 1], got {alpha!r}")
    if temperature <= 0:
        raise ValueError(f"temperature: expected a positive float, got {temperature!r}")
    keep = labels != IGNORE_INDEX
    s = student_logits[keep].float()
    hard = F.cross_entropy(s, labels[keep], reduction="sum") if s.numel() else s.sum()
    loss = (1.0 - alpha) * hard
    if alpha > 0:
        if teacher_logits is None:
            raise ValueError("teacher_logits: expected the teacher's MLM logits for alpha > 0, got None")
        if teacher_logits.shape != student_logits.shape:
            raise ValueError(f"teacher_logits: expected shape {tuple(student_logits.shape)} (the student's), "
                             f"got {tuple(teacher_logits.shape)}")
        p_t = torch.softmax(teacher_logits[keep].float() / temperature, dim=-1)
        soft = -(p_t * torch.log_softmax(s / temperature, dim=-1)).sum()
        loss = loss + alpha * temperature ** 2 * soft
    return loss / keep.sum().clamp_min(1)


def nsp_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-sentence prediction: cross-entropy on the true labels (0 = B follows A, 1 = B is random)."""
    return F.cross_entropy(logits.float().view(-1, 2), labels.view(-1))
