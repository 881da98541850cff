"""Prune–Train–Repeat on several processes: what the loop (`iterative.prune_train_repeat`) does differently there.

Each rank reads its share of the loaders; the validation counts are added up over ranks (or, for a metric of the
user's, rank 0's value is everyone's); a callback's stop on one rank stops every rank; a checkpoint is resumed by
all ranks or by none.  The collectives are `distributed`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn as nn

from .. import distributed
from ..checkpoints import fingerprint
from .evaluation import evaluate

__all__ = ["accuracy_over_processes", "agreed_metric", "any_rank", "for_processes", "resume_everywhere"]


def accuracy_over_processes(collective: distributed.Collective) -> Callable[[nn.Module, Iterable], float]:
    """Top-1 accuracy with every process evaluating its own shard, the counts added up (no process waits in a
    collective while another evaluates alone)."""
    def metric(model: nn.Module, loader) -> float:
        result = evaluate(model, loader) if len(loader) else {"accuracy": 0.0, "n": 0}   # a rank may get none
        counts = collective.all_reduce(torch.tensor([round(result["accuracy"] * result["n"]), result["n"]],
                                                    dtype=torch.float64))
        return float(counts[0] / counts[1])
    return metric


def agreed_metric(metric: Callable, collective: distributed.Collective) -> Callable[[nn.Module, Iterable], float]:
    """A metric of the user's, computed by every process on the loader as given; rank 0's value is everyone's, so
    every process takes the same decisions."""
    return lambda model, loader: collective.broadcast(float(metric(model, loader)))


def for_processes(collective: distributed.Collective, schedule, train_loader: Iterable, val_loader: Iterable,
                  metric: Callable | None, model: nn.Module) -> tuple[Iterable, Iterable, Callable]:
    """``(train loader, validation loader, metric)`` of this rank, under several processes: its share of the data
    and a metric every rank agrees on; the starting model checked to be the same on every rank.  A `schedule`
    (`iterative.PruningSchedule`) with a speed target is refused."""
    if schedule.target_speedup is not None:
        raise ValueError(f"target_speedup times the network on this machine, which {collective.world_size} processes "
                         "training at once would disturb: under torchrun prune to flops_reduction (or a fraction), then "
                         "time the result in one process (measure.measured_speedup)")
    train_loader = distributed.sharded(train_loader, collective, train=True, seed=schedule.seed)
    if metric is None:
        val_loader, metric = distributed.sharded(val_loader, collective, train=False), accuracy_over_processes(collective)
    else:
        metric = agreed_metric(metric, collective)
    distributed.check_same(collective, fingerprint(model), "the starting model")
    return train_loader, val_loader, metric


def any_rank(collective: distributed.Collective, flag: bool) -> bool:
    """True on every rank when it is True on one (a callback's stop)."""
    return bool(collective.all_reduce(torch.tensor([float(bool(flag))], dtype=torch.float64))[0] > 0)


def resume_everywhere(checkpoint: Path | None, collective: distributed.Collective) -> bool:
    """Whether to resume: the checkpoint must be seen by every process (on a file system all nodes share) or none."""
    if checkpoint is None:
        return False
    seen = collective.all_gather(checkpoint.exists())
    if len(set(seen)) > 1:
        raise FileNotFoundError(f"{checkpoint} exists for rank(s) {[r for r, e in enumerate(seen) if e]} only: put the "
                                "checkpoint on a file system every node sees (or delete it to start over)")
    return seen[0]
