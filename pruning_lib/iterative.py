"""Prune–Train–Repeat (Molchanov et al. 2017, Fig. 1; the seed's "iterative pruning").

Each iteration:
1. rank the filters with a criterion over a few batches (scores L2-normalised per layer);
2. optionally subtract the paper's FLOPs regularisation, λ · (FLOPs one filter costs);
3. remove the k globally lowest filters (a floor per layer: no layer is emptied);
4. fine-tune for n steps; 5. evaluate and record.
It stops at a target: a fraction of filters removed, a FLOPs budget, or an accuracy floor.

Every iteration is checkpointed (model widths and weights, optimizer state, history).  Each
iteration re-seeds everything from (seed, iteration), so an interrupted run resumed from its
checkpoint ends in the same state as an uninterrupted one.
"""

from __future__ import annotations

import copy
import itertools
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from . import bench, train
from .criteria import rank_filters
from .surgery import find_couplings, filters_per_layer, load_pruned, plan_from_scores, prune_filters, save_pruned


@dataclass(frozen=True)
class PruningSchedule:
    """What one Prune–Train–Repeat run does.  Give at least one target."""

    criterion: str = "taylor"
    filters_per_iteration: int = 48
    finetune_steps: int = 40
    lr: float = 5e-4
    rank_batches: int = 4
    target_fraction: float | None = None   # stop when this fraction of all filters is gone
    target_gflops: float | None = None     # ... or when GFLOPs per image are at most this
    min_accuracy: float | None = None      # ... or when accuracy after fine-tuning falls below this
    flops_lambda: float = 0.0              # FLOPs regularisation strength (0: off)
    min_keep: int = 1
    seed: int = 0

    def __post_init__(self):
        if self.target_fraction is None and self.target_gflops is None and self.min_accuracy is None:
            raise ValueError("give a target: target_fraction, target_gflops or min_accuracy")
        if self.target_fraction is not None and not 0 < self.target_fraction < 1:
            raise ValueError(f"target_fraction must be in (0, 1), got {self.target_fraction}")
        if self.filters_per_iteration < 1 or self.finetune_steps < 0:
            raise ValueError("filters_per_iteration must be >= 1 and finetune_steps >= 0")


def flops_per_filter(model: nn.Module, input_shape: Sequence[int]) -> dict[str, float]:
    """GFLOPs per image that removing one filter of each conv saves (its own output + the consumer's input)."""
    per_layer = bench.flops_per_layer(model, (1, *input_shape)).set_index("module")["flops"]
    modules = dict(model.named_modules())
    cost = {}
    for name, c in find_couplings(model).items():
        if isinstance(c, str):
            continue
        conv, consumer = modules[name], modules[c.consumer]
        fan_in = consumer.in_channels if isinstance(consumer, nn.Conv2d) else conv.out_channels
        cost[name] = (per_layer.get(name, 0) / conv.out_channels + per_layer.get(c.consumer, 0) / fan_in) / 1e9
    return cost


def regularised_scores(scores: dict[str, torch.Tensor], cost: dict[str, float], lam: float) -> dict[str, torch.Tensor]:
    """Θ − λ · Θ_flops (paper, Sec. 2.3), with Θ_flops the layer's cost per filter relative to the most costly layer."""
    if lam == 0:
        return scores
    top = max(cost.values())
    return {n: s - lam * cost[n] / top for n, s in scores.items()}


def _record(model, iteration, acc_before, acc_after, input_shape, removed, total, seconds) -> dict:
    row = {"iteration": iteration, "filters_removed": removed, "fraction_removed": removed / total,
           "params": bench.count_parameters(model), "gflops": bench.count_flops(model, (1, *input_shape)) / 1e9,
           "accuracy_before_finetune": acc_before, "accuracy_after_finetune": acc_after, "time_s": seconds}
    row.update({f"filters:{n}": k for n, k in filters_per_layer(model).items()})
    return row


def _reseed(schedule: PruningSchedule, iteration: int, loader) -> None:
    seed = schedule.seed * 100_003 + iteration
    torch.manual_seed(seed)
    if getattr(loader, "generator", None) is not None:
        loader.generator.manual_seed(seed)


def _done(schedule: PruningSchedule, row: dict) -> bool:
    return ((schedule.target_fraction is not None and row["fraction_removed"] >= schedule.target_fraction - 1e-9)
            or (schedule.target_gflops is not None and row["gflops"] <= schedule.target_gflops)
            or (schedule.min_accuracy is not None and row["accuracy_after_finetune"] < schedule.min_accuracy))


def _notify(callbacks, hook: str, *args) -> bool:
    return any(bool(getattr(cb, hook)(*args)) for cb in callbacks if hasattr(cb, hook))


def _resume(path: Path, model: nn.Module, schedule: PruningSchedule):
    pruned, meta = load_pruned(path, model)
    if meta["schedule"] != asdict(schedule):
        raise ValueError(f"{path} was made with another schedule ({meta['schedule']}); "
                         "use another checkpoint path or delete it to start over")
    return pruned, pd.DataFrame(meta["history"])


def prune_train_repeat(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable,
    schedule: PruningSchedule,
    *,
    input_shape: Sequence[int],
    checkpoint: str | Path | None = None,
    callbacks: Sequence = (),
    progress: bool = True,
) -> tuple[nn.Module, pd.DataFrame]:
    """Run Prune–Train–Repeat on a copy of `model` (left unchanged) until the schedule's target.

    Args:
        model: the trained, unpruned baseline.
        input_shape: one image's shape (C, H, W), for FLOPs.
        checkpoint: a file; when it exists the run resumes from it, and it is rewritten after every iteration.
        callbacks: objects with any of ``on_prune(row, model)`` (after pruning, before fine-tuning),
            ``on_iteration(row, model)``, and train.Callback's ``on_step`` / ``on_epoch`` (during fine-tuning).
            Returning True from on_prune / on_iteration, or stopping fit, ends the run after that iteration.

    Returns:
        (pruned model, history): one row per iteration (row 0: the baseline) with filters left per
        layer (``filters:<conv>``), params, gflops, accuracy before and after fine-tuning, time.
    """
    total = sum(filters_per_layer(model).values())
    checkpoint = Path(checkpoint) if checkpoint else None
    if checkpoint and checkpoint.exists():
        current, history = _resume(checkpoint, model, schedule)
    else:
        current = copy.deepcopy(model)
        acc = train.evaluate(current, val_loader)["accuracy"]
        history = pd.DataFrame([_record(current, 0, acc, acc, input_shape, 0, total, 0.0)])
    cost = flops_per_filter(current, input_shape) if schedule.flops_lambda else {}
    bar = tqdm(desc=f"prune-train-repeat ({schedule.criterion})", unit="iter", disable=not progress)
    while not _done(schedule, history.iloc[-1].to_dict()):
        iteration = int(history["iteration"].iloc[-1]) + 1
        removed = int(history["filters_removed"].iloc[-1])
        k = schedule.filters_per_iteration
        if schedule.target_fraction is not None:
            k = min(k, round(schedule.target_fraction * total) - removed)
        left = filters_per_layer(current)
        k = min(k, sum(n - schedule.min_keep for n in left.values()))
        if k <= 0:
            break
        start = time.perf_counter()
        _reseed(schedule, iteration, train_loader)
        batches = list(itertools.islice(train_loader, schedule.rank_batches))
        scores = rank_filters(current, batches, schedule.criterion, seed=schedule.seed * 1000 + iteration)
        if schedule.flops_lambda:
            cost = flops_per_filter(current, input_shape)
        plan = plan_from_scores(regularised_scores(scores, cost, schedule.flops_lambda), k, min_keep=schedule.min_keep)
        prune_filters(current, plan)
        before = train.evaluate(current, val_loader)["accuracy"]
        row = _record(current, iteration, before, float("nan"), input_shape, removed + k, total, 0.0)
        stop = _notify(callbacks, "on_prune", row, current)
        optimizer = torch.optim.Adam([p for p in current.parameters() if p.requires_grad], lr=schedule.lr)
        if schedule.finetune_steps:
            fitted = train.fit(current, train_loader, steps=schedule.finetune_steps, optimizer=optimizer,
                               callbacks=[cb for cb in callbacks if isinstance(cb, train.Callback)],
                               progress=False)
            stop = stop or fitted.attrs.get("stopped_early", False)
        row["accuracy_after_finetune"] = train.evaluate(current, val_loader)["accuracy"]
        row["time_s"] = time.perf_counter() - start
        history = pd.concat([history, pd.DataFrame([row])], ignore_index=True)
        if checkpoint:
            save_pruned(current, checkpoint, meta={"schedule": asdict(schedule), "iteration": iteration,
                                                   "history": history.to_dict(orient="list"),
                                                   "optimizer": optimizer.state_dict()})
        bar.update()
        bar.set_postfix(gflops=f"{row['gflops']:.4f}", acc=f"{row['accuracy_after_finetune']:.3f}")
        if _notify(callbacks, "on_iteration", row, current) or stop:
            break
    bar.close()
    return current.eval(), history
