"""Losses for fine-tuning: plain cross-entropy, or distillation from a teacher (the dense network)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import call, mode

__all__ = ["KnowledgeDistillation", "LossFn", "batch_loss"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class KnowledgeDistillation:
    """Distillation loss (Hinton et al. 2015): learn the labels *and* a teacher's soft predictions.

    ``loss = (1 - alpha) * CE(s, y) + alpha * T**2 * KL(softmax(t / T) || softmax(s / T))``

    with ``s`` the student's logits (N, K), ``t = teacher(x)`` computed in eval mode without
    gradients, and ``T`` the temperature (the ``T**2`` keeps the soft term's gradients on the scale
    of the hard term's).  After pruning, the teacher is the dense network: its soft predictions tell
    the pruned student how confusable each image is, which 3,200 hard labels cannot.

    Use it as ``fit(..., loss_fn=KnowledgeDistillation(dense, alpha=0.7))``; the teacher is not
    changed (its modes are restored and it gets no gradients).
    """

    uses_inputs = True   # fit and evaluate pass the batch's inputs: loss_fn(logits, y, inputs=x)

    def __init__(self, teacher: nn.Module, alpha: float = 0.7, temperature: float = 4.0) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha weighs the teacher's term and must be in [0, 1]; got {alpha}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        self.teacher, self.alpha, self.temperature = teacher, alpha, temperature

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor, *, inputs: torch.Tensor) -> torch.Tensor:
        with mode(self.teacher, training=False), torch.no_grad():
            soft_targets = F.softmax(call(self.teacher, inputs) / self.temperature, dim=1)
        soft = F.kl_div(F.log_softmax(logits / self.temperature, dim=1), soft_targets, reduction="batchmean")
        hard = F.cross_entropy(logits, targets)
        return (1 - self.alpha) * hard + self.alpha * self.temperature**2 * soft


def batch_loss(loss_fn: LossFn, logits: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``loss_fn(logits, targets)``, or with ``inputs=`` for a loss that needs them (distillation)."""
    if getattr(loss_fn, "uses_inputs", False):
        return loss_fn(logits, targets, inputs=inputs)
    return loss_fn(logits, targets)
