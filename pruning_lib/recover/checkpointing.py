"""A Prune–Train–Repeat run's checkpoint: written after every iteration, checked and resumed from.

The checkpoint holds the model's widths and weights, the history so far, the schedule and a fingerprint of the
starting model (no optimizer state: every iteration fine-tunes with a fresh optimizer).  `resume` refuses one made
from another starting model or with another schedule, or one whose history does not hold together
(`CheckpointMismatchError`, saying what differs).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch.nn as nn

from ..checkpoints import plain_value, save_pruned
from ..graph.groups import group_widths
from ..surgery import load_pruned
from .schedule import HISTORY_COLUMNS, PruningSchedule

__all__ = ["CheckpointMismatchError", "check_meta", "history_dict", "resume", "save"]


class CheckpointMismatchError(ValueError):
    """A checkpoint was made from another starting model or with another schedule."""


def history_dict(history: pd.DataFrame) -> dict[str, list]:
    """A history as plain lists (what a checkpoint holds)."""
    return {col: [plain_value(v) for v in history[col].tolist()] for col in history.columns}


def check_meta(path: Path, meta, schedule: PruningSchedule, baseline_fingerprint: str) -> pd.DataFrame:
    """The checkpoint's history, after checking that its metadata belongs to this run and is consistent."""
    if not isinstance(meta, dict):
        raise CheckpointMismatchError(f"{path}: its metadata is a {type(meta).__name__}, not a dict")
    missing = [k for k in ("schedule", "baseline_fingerprint", "history", "model_iteration") if k not in meta]
    if missing:
        raise CheckpointMismatchError(f"{path} lacks {missing} in its metadata: not a Prune–Train–Repeat checkpoint")
    if meta["baseline_fingerprint"] != baseline_fingerprint:
        raise CheckpointMismatchError(f"{path} was made from another starting model (weights fingerprint differs)")
    if meta["schedule"] != asdict(schedule):
        saved = meta["schedule"] if isinstance(meta["schedule"], dict) else {}
        differ = {k: (saved.get(k), v) for k, v in asdict(schedule).items() if saved.get(k) != v}
        raise CheckpointMismatchError(f"{path} was made with another schedule: "
                                      + ", ".join(f"{k} {a!r} (now {b!r})" for k, (a, b) in differ.items()))
    try:
        history = pd.DataFrame(meta["history"])
    except (ValueError, TypeError) as err:
        raise CheckpointMismatchError(f"{path}: its history is not a table ({err})") from None
    lacking = [c for c in HISTORY_COLUMNS if c not in history.columns]
    if lacking or history.empty:
        raise CheckpointMismatchError(f"{path}: its history lacks the columns {lacking} or is empty")
    for column in ("accuracy_before_finetune", "accuracy_after_finetune", "gflops", "params", "iteration"):
        if not pd.api.types.is_numeric_dtype(history[column]):
            raise CheckpointMismatchError(f"{path}: history column {column!r} is not numeric")
    iterations = history["iteration"].tolist()
    model_iteration = meta["model_iteration"]
    if iterations != list(range(len(iterations))):
        raise CheckpointMismatchError(f"{path}: history iterations are {iterations}, not 0..{len(iterations) - 1}")
    if isinstance(model_iteration, bool) or not isinstance(model_iteration, int) or not 0 <= model_iteration < len(history):
        raise CheckpointMismatchError(f"{path}: model_iteration={model_iteration!r} is not a row of its "
                                      f"{len(history)}-row history")
    return history


def resume(path: Path, model: nn.Module, schedule: PruningSchedule, baseline_fingerprint: str
           ) -> tuple[nn.Module, pd.DataFrame]:
    """The pruned model and the history a checkpoint holds, checked against this run (`CheckpointMismatchError`);
    the model's trainable flags and train/eval mode are those of `model`."""
    try:
        pruned, meta = load_pruned(path, model)
    except ValueError as err:                 # damaged, foreign, or another architecture
        raise CheckpointMismatchError(str(err)) from None
    history = check_meta(path, meta, schedule, baseline_fingerprint)
    widths = {c.removeprefix("filters:"): int(history[c].iloc[meta["model_iteration"]])
              for c in history.columns if c.startswith("filters:")}
    got = group_widths(pruned) if widths else None
    if widths and widths != got:
        raise CheckpointMismatchError(f"{path}: the saved model's widths {got} are not those of "
                                      f"history row {meta['model_iteration']} ({widths})")
    trainable = {n: p.requires_grad for n, p in model.named_parameters()}
    for name, p in pruned.named_parameters():
        p.requires_grad_(trainable[name])
    pruned.train(model.training)
    history.attrs["model_iteration"] = meta["model_iteration"]
    return pruned, history


def save(path: Path, model: nn.Module, schedule, baseline_fingerprint, history, model_iteration) -> None:
    """The model and the history so far; no optimizer state: every iteration builds a fresh optimizer."""
    save_pruned(model, path, meta={
        "schedule": asdict(schedule), "baseline_fingerprint": baseline_fingerprint,
        "iteration": int(history["iteration"].iloc[-1]), "model_iteration": int(model_iteration),
        "history": history_dict(history)})
