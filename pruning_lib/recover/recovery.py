"""Prune once, then watch fine-tuning win the accuracy back (the pure function behind the recovery widget).

`prune_and_finetune` removes a fraction of the filters of a *copy* of the baseline in one shot
(one iteration of `iterative.prune_train_repeat`: same ranking, selection, surgery and
fine-tuning), evaluating validation accuracy every few fine-tuning steps through callbacks.
The widget (`widgets.recovery`) only wires sliders and buttons to it and redraws a plot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import pandas as pd
import torch.nn as nn

from . import train
from ..graph.groups import group_widths
from .evaluation import evaluate
from .iterative import PruningSchedule, prune_train_repeat

__all__ = ["RECOVERY_COLUMNS", "RecoveryResult", "prune_and_finetune"]

RECOVERY_COLUMNS = ("step", "phase", "accuracy", "train_loss")


@dataclass
class RecoveryResult:
    """What `prune_and_finetune` returns.

    Attributes:
        model: the pruned, fine-tuned copy (eval mode).
        history: one row per evaluation, columns ``RECOVERY_COLUMNS``: ``phase`` is "baseline"
            (step 0, before pruning), "pruned" (step 0, right after pruning) or "fine-tune";
            ``accuracy`` is validation accuracy (fraction); ``train_loss`` the mean training loss
            of the steps since the previous row (NaN for the first two).
        baseline / pruned: ``{"gflops" (per image), "params", "filters"}`` before and after pruning.
        stopped: True if `should_stop` ended fine-tuning early.
    """

    model: nn.Module
    history: pd.DataFrame
    baseline: dict = field(default_factory=dict)
    pruned: dict = field(default_factory=dict)
    stopped: bool = False

    @property
    def accuracy(self) -> float:
        """Validation accuracy at the end (fraction)."""
        return float(self.history["accuracy"].iloc[-1])


class _Recorder(train.Callback):
    """Turns `prune_train_repeat`'s callbacks into the recovery history (and forwards progress)."""

    def __init__(self, val_loader, steps, eval_every, on_record, on_progress, should_stop):
        self.val_loader, self.steps, self.eval_every = val_loader, steps, eval_every
        self.on_record, self.on_progress, self.should_stop = on_record, on_progress, should_stop
        self.rows, self.baseline, self.pruned = [], {}, {}
        self.losses, self.last_step, self.stopped = [], 0, False

    def _add(self, step: int, phase: str, accuracy: float) -> None:
        loss = sum(self.losses) / len(self.losses) if self.losses else float("nan")
        self.rows.append({"step": step, "phase": phase, "accuracy": accuracy, "train_loss": loss})
        self.losses, self.last_step = [], step
        if self.on_record:
            self.on_record(self.history(), {"baseline": self.baseline, "pruned": self.pruned,
                                            "step": step, "steps": self.steps})

    def history(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(RECOVERY_COLUMNS))

    @staticmethod
    def _size(row: dict) -> dict:
        return {"gflops": row["gflops"], "params": int(row["params"]),
                "filters": int(sum(v for k, v in row.items() if k.startswith("filters:")))}

    def on_start(self, history: pd.DataFrame, model) -> None:
        row = history.iloc[0].to_dict()
        self.baseline = self._size(row)
        self._add(0, "baseline", float(row["accuracy_after_finetune"]))

    def on_prune(self, row: dict, model) -> None:
        self.pruned = self._size(row)
        self._add(0, "pruned", float(row["accuracy_before_finetune"]))

    def on_step(self, step: int, loss: float, model) -> bool:
        self.losses.append(loss)
        if self.on_progress:
            self.on_progress(step, self.steps)
        if self.should_stop is not None and self.should_stop():
            self.stopped = True
            return True
        if step % self.eval_every == 0 or step == self.steps:
            self._add(step, "fine-tune", evaluate(model, self.val_loader)["accuracy"])
        return False

    def on_iteration(self, row: dict, model) -> None:
        if row["finetune_steps"] != self.last_step:   # stopped between two evaluations
            self._add(int(row["finetune_steps"]), "fine-tune", float(row["accuracy_after_finetune"]))


def prune_and_finetune(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable,
    *,
    input_shape: Sequence[int],
    amount: float,
    criterion: str = "taylor",
    steps: int = 40,
    eval_every: int = 5,
    on_record: Callable[[pd.DataFrame, dict], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    **schedule: Any,
) -> RecoveryResult:
    """Remove `amount` of all prunable filters of a copy of `model` at once, then fine-tune it for `steps`.

    Args:
        model: the trained baseline (left unchanged).
        input_shape: one image's (C, H, W), for FLOPs.
        amount: fraction of all prunable filters to remove, in (0, 1) (at least one filter; no layer
            is emptied, so very large amounts stop at one filter per layer).
        criterion: as in `iterative.PruningSchedule`.
        steps: fine-tuning steps (batches) after the prune.
        schedule: any other field of `iterative.PruningSchedule` (``lr``, ``rank_batches``,
            ``flops_lambda``, ``multiple_of``, ``distill``, ``temperature``, ``seed``, ...): the prune and
            the fine-tune are one iteration of Prune–Train–Repeat with these settings.
        eval_every: validation accuracy is measured every this many steps (and at the end).
        on_record: called as ``on_record(history so far, info)`` after each evaluation, with
            info ``{"baseline", "pruned", "step", "steps"}`` (for live plots).
        on_progress: called as ``on_progress(step, steps)`` after each fine-tuning step.
        should_stop: checked after every step; returning True ends fine-tuning there.

    Returns:
        A `RecoveryResult` (model, history, sizes before and after, stopped).
    """
    if not 0 < amount < 1:
        raise ValueError(f"amount is a fraction of all filters in (0, 1), got {amount}")
    if eval_every < 1:
        raise ValueError(f"eval_every must be >= 1, got {eval_every}")
    total = sum(group_widths(model).values())
    k = round(amount * total)
    if k < 1:
        raise ValueError(f"amount={amount} of {total} filters removes none; use at least {1 / total:.4f}")
    settings = {"lr": 5e-4, "rank_batches": 4, **schedule}
    plan = PruningSchedule(criterion=criterion, filters_per_iteration=k, fraction_per_iteration=None,
                           finetune_steps=steps, target_fraction=amount, **settings)
    recorder = _Recorder(val_loader, steps, eval_every, on_record, on_progress, should_stop)
    pruned, _ = prune_train_repeat(model, train_loader, val_loader, plan, input_shape=input_shape,
                                   callbacks=[recorder], progress=False)
    return RecoveryResult(pruned, recorder.history(), recorder.baseline, recorder.pruned, recorder.stopped)
