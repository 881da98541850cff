"""Evaluation: loss and accuracy of a model on a loader, predictions and the confusion matrix.

Every function runs in eval mode under ``torch.no_grad`` and restores each module's previous mode.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .distill import LossFn, batch_loss
from ..runtime import call, mode, move, resolve_device

__all__ = ["confusion_matrix", "correct", "evaluate", "predict", "unpack_batch"]


def unpack_batch(batch: Any, device: torch.device) -> tuple[Any, torch.Tensor]:
    """Split a loader batch into ``(inputs, targets (N,))`` on ``device``; the inputs are a tensor (N, C, H, W), or
    a tuple or dict of tensors for a model with several inputs (`runtime.call`)."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(
            f"loader must yield (inputs, targets) pairs; got {type(batch).__name__}"
            + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        )
    x, y = batch
    return move(x, device, non_blocking=True), y.to(device, non_blocking=True)


def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    device: str | torch.device | None = None,
    loss_fn: LossFn = F.cross_entropy,
    progress: bool = False,
    per_example: bool = False,
) -> dict[str, Any]:
    """Mean loss and top-1 accuracy of ``model`` over ``loader``.

    Runs in eval mode under ``torch.no_grad`` and restores each module's previous mode.
    ``loss_fn(logits (N, K), targets (N,))`` must return the batch mean (as ``F.cross_entropy``);
    a loss with ``uses_inputs = True`` (:class:`KnowledgeDistillation`) also gets ``inputs=x``.

    Returns:
        ``{"loss": mean loss per example, "accuracy": fraction correct in [0, 1], "n": examples}``, and
        with `per_example` also ``"correct"``: (N,) float64 per-image correctness (1.0 right, 0.0 wrong)
        in the loader's order.
    """
    device = resolve_device(model, device)
    total_loss, hits = 0.0, []
    with mode(model, training=False), torch.no_grad():
        for batch in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
            x, y = unpack_batch(batch, device)
            logits = call(model, x)
            total_loss += batch_loss(loss_fn, logits, y, x).item() * len(y)
            hits.append((logits.argmax(dim=1) == y).cpu())
    if not hits:
        raise ValueError("evaluate got an empty loader; check the dataset and batch size")
    correct = torch.cat(hits).double()
    n = len(correct)
    result = {"loss": total_loss / n, "accuracy": int(correct.sum()) / n, "n": n}
    return {**result, "correct": correct} if per_example else result


def predict(
    model: nn.Module, loader: Iterable, *, device: str | torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted classes (argmax of logits) and true targets, both ``(N,)`` int64 on the CPU."""
    device = resolve_device(model, device)
    preds, targets = [], []
    with mode(model, training=False), torch.no_grad():
        for batch in loader:
            x, y = unpack_batch(batch, device)
            preds.append(call(model, x).argmax(dim=1).cpu())
            targets.append(y.cpu())
    if not preds:
        raise ValueError("predict got an empty loader; check the dataset and batch size")
    return torch.cat(preds).long(), torch.cat(targets).long()


def correct(model: nn.Module, loader: Iterable, *, device: str | torch.device | None = None) -> torch.Tensor:
    """Per-image correctness ``(N,)`` (1.0 right, 0.0 wrong), in the loader's order: what paired comparisons of
    two models on the same images need (`course.lessons`); its mean is the accuracy."""
    return evaluate(model, loader, device=device, per_example=True)["correct"]


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts ``(num_classes, num_classes)`` int64: entry ``[i, j]`` = examples of true class i
    predicted as j (rows = true class, columns = prediction)."""
    preds, targets = torch.as_tensor(preds).long().flatten(), torch.as_tensor(targets).long().flatten()
    if preds.shape != targets.shape:
        raise ValueError(
            f"preds has {preds.numel()} entries but targets has {targets.numel()}; they must match"
        )
    for name, t in (("preds", preds), ("targets", targets)):
        if t.numel() and (t.min() < 0 or t.max() >= num_classes):
            raise ValueError(
                f"{name} has class {int(t.max() if t.max() >= num_classes else t.min())} "
                f"outside [0, {num_classes}); pass the right num_classes"
            )
    counts = torch.bincount(targets * num_classes + preds, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)
