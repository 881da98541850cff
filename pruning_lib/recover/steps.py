"""The steps of a Prune–Train–Repeat iteration, each a function of the run's state (`Run`) that can be called alone.

1. `rank`: score every group's channels on a few training batches (and subtract the FLOPs regularisation);
2. `plan`: the channels to remove: the globally lowest ones (a count per iteration), or the widths that meet the
   run's budgets (`cost.budgets`);
3. `cut`: remove them (`surgery.prune_filters`), then analyse the network once (`analyse`);
4. `fine_tune`: a few steps of training;
5. `judge`: time the network end to end against the starting one (with a speed target);
6. `record` and `save`: one history row, and the checkpoint.

**One analysis per cut.**  `analyse` traces the network once after every cut (its channel groups, every tensor's
shape, its parameters and FLOPs: `cost.network.Network`), and every step reads that analysis instead of tracing
the network again: ranking takes its traced graph, planning its widths and FLOPs per channel, surgery its
groups, the record its parameters and FLOPs.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import pandas as pd
import torch.nn as nn

from . import train
from .. import distributed
from ..checkpoints import fingerprint
from ..cost.budgets import BudgetPlanner, Targets
from ..cost.network import Network
from ..measure.counting import count_flops
from ..measure.latency import measured_speedup
from ..plan import Plan, plan_from_scores, plan_keeping, regularised_scores
from ..rank.criteria import rank_filters
from ..runtime import Inputs, first_examples, iteration_seed
from ..surgery import prune_filters
from . import checkpointing
from .schedule import PruningSchedule

__all__ = ["Run", "analyse", "budget_planner", "cut", "fine_tune", "judge", "plan", "rank", "record", "reseed",
           "save", "widths_of"]


@dataclass
class Run:
    """One run's state, carried from step to step.

    Attributes:
        model: the starting network (the baseline; the teacher when distilling; the reference of the speed).
        schedule: what the run does.
        input_shape: one example's shape ``(C, H, W)``, or a batch of the model's inputs (a tuple or dict of
            tensors) for a model with several inputs.
        current: the network now; `net`: its analysis (`analyse`), rebuilt after every cut.
        history: one row per iteration so far; `model_iteration`: the row `current` belongs to.
        floors: the fewest channels each group keeps; `total`: the prunable channels at the start.
        planner: the budgets' planner (`cost.budgets.BudgetPlanner`), or None for a count per iteration.
    """

    model: nn.Module
    schedule: PruningSchedule
    input_shape: tuple[int, ...] | Inputs
    train_loader: Iterable
    val_loader: Iterable
    metric: Callable[[nn.Module, Iterable], float]
    optimizer: Callable
    loss_fn: Callable
    rank_loss: Callable
    collective: distributed.Collective
    callbacks: Sequence = ()
    checkpoint: Path | None = None
    baseline_fingerprint: str = ""
    floors: dict[str, int] = field(default_factory=dict)
    total: int = 0
    planner: BudgetPlanner | None = None
    current: nn.Module | None = None
    net: Network | None = None
    history: pd.DataFrame | None = None
    model_iteration: int = 0


def analyse(model: nn.Module, input_shape: Sequence[int] | Inputs) -> Network:
    """The network's one analysis: groups and layouts (one trace), shapes, parameters and FLOPs per example.
    `input_shape` is one example's shape ``(C, H, W)``, or a batch of the model's inputs (a tuple or a dict of
    tensors: its first example is used)."""
    if isinstance(input_shape, (tuple, list)) and all(isinstance(d, int) for d in input_shape):
        return Network(model, (1, *input_shape))
    return Network(model, first_examples(input_shape, 1))


def widths_of(row: Mapping) -> dict[str, int]:
    """A history row's widths, ``{group: channels}`` (its ``filters:<group>`` columns)."""
    return {c.removeprefix("filters:"): int(v) for c, v in row.items() if str(c).startswith("filters:")}


def budget_planner(model: nn.Module, schedule: PruningSchedule, input_shape: Sequence[int]) -> BudgetPlanner | None:
    """The planner of a run with a speedup or parameter target (None otherwise), from the starting model."""
    if not schedule.budgeted:
        return None
    shaped = all(isinstance(d, int) for d in input_shape) if isinstance(input_shape, (tuple, list)) else False
    flops = (count_flops(model, (1, *input_shape) if shaped else first_examples(input_shape, 1)) / 1e9
             / schedule.target_gflops if schedule.target_gflops is not None else None)
    targets = Targets(speedup=schedule.target_speedup, params_reduction=schedule.target_params_reduction,
                      flops_reduction=flops if flops and flops > 1 else None)
    batch = (schedule.latency_batch, *input_shape) if shaped else first_examples(input_shape, 1)
    return BudgetPlanner(model, batch, targets, form=schedule.latency_form,
                         num_threads=schedule.latency_threads, share=schedule.fraction_per_iteration or 0.1,
                         step=schedule.multiple_of if schedule.multiple_of > 1 else schedule.latency_step,
                         exclude=schedule.keep_whole)


def reseed(schedule: PruningSchedule, iteration: int, loader) -> None:
    """Seed everything an iteration draws (batches, dropout, the random criterion) from (seed, iteration)."""
    import torch

    seed = iteration_seed(schedule.seed, iteration)
    torch.manual_seed(seed)
    if getattr(loader, "generator", None) is not None:
        loader.generator.manual_seed(seed)
    if hasattr(getattr(loader, "sampler", None), "set_epoch"):      # a DistributedSampler shuffles by its epoch
        loader.sampler.set_epoch(seed)


def rank(run: Run, iteration: int) -> dict:
    """Step 1: the criterion's scores on the iteration's ranking batches, normalised per group, minus the FLOPs
    regularisation (``λ · FLOPs per channel``, relative to the costliest group) when the schedule has one."""
    s = run.schedule
    reseed(s, iteration, run.train_loader)
    batches = list(itertools.islice(run.train_loader, s.rank_batches))
    scores = rank_filters(run.current, batches, s.criterion, seed=iteration_seed(s.seed, iteration),
                          loss_fn=run.rank_loss, collective=run.collective, traced=run.net.trace)
    scores = {g: v for g, v in scores.items() if g not in s.keep_whole}
    cost = run.net.flops_per_channel() if s.flops_lambda else {}
    return regularised_scores(scores, cost, s.flops_lambda)


def channels_to_remove(run: Run) -> int:
    """This iteration's count (a schedule without budgets): the schedule's k, or its share of what is left, no more
    than the fraction target needs and the floors allow."""
    s = run.schedule
    removed = int(run.history["filters_removed"].iloc[-1])
    k = (s.filters_per_iteration if s.fraction_per_iteration is None
         else max(1, round(s.fraction_per_iteration * (run.total - removed))))
    if s.target_fraction is not None:
        k = min(k, round(s.target_fraction * run.total) - removed)
    return min(k, sum(max(n - run.floors[g], 0) for g, n in run.net.widths.items() if g not in s.keep_whole))


def plan(run: Run, scores: Mapping[str, Any]) -> Plan:
    """Step 2: ``{group: channels to remove}`` (rank 0's, broadcast to every process)."""
    if run.planner is not None:
        last = run.history.iloc[-1]
        widths = run.planner.plan(run.current, scores, widths_of(last), run.floors, speedup=last.get("speedup_low"),
                                  latency_ms=last.get("latency_ms"))
        chosen = plan_keeping(scores, {g: w for g, w in widths.items() if g in scores})
    else:
        k = channels_to_remove(run)
        chosen = plan_from_scores(scores, k, min_keep=run.floors, multiple_of=run.schedule.multiple_of) if k > 0 else {}
    return run.collective.broadcast(chosen)


def cut(run: Run, chosen: Plan, iteration: int) -> int:
    """Step 3: remove the planned channels (every process holds the same network afterwards), analyse the network
    anew; returns how many channels went."""
    removed = sum(map(len, chosen.values()))
    if removed:
        prune_filters(run.current, chosen, groups=run.net.trace.groups)
        if run.collective.world_size > 1:
            distributed.check_same(run.collective, fingerprint(run.current), f"the network after iteration {iteration}'s cut")
        run.net = analyse(run.current, run.input_shape)
    return removed


def fine_tune(run: Run) -> tuple[int, bool]:
    """Step 4: the schedule's fine-tune steps (under DDP with several processes); returns (steps done, stopped)."""
    s = run.schedule
    if not s.finetune_steps:
        return 0, False
    with distributed.synchronised_batchnorm(run.current, run.collective):
        fitted = train.fit(run.collective.wrap(run.current), run.train_loader, steps=s.finetune_steps,
                           optimizer=run.optimizer([p for p in run.current.parameters() if p.requires_grad]),
                           eval_every=s.finetune_steps, loss_fn=run.loss_fn, lr_schedule=s.lr_schedule,
                           callbacks=[cb for cb in run.callbacks if isinstance(cb, train.Callback)], progress=False)
    distributed.average_buffers(run.current, run.collective)     # BatchNorm's running statistics, one per process
    steps = int(fitted["step"].iloc[-1]) if len(fitted) else 0
    return steps, bool(fitted.attrs.get("stopped_early", False))


def judge(run: Run) -> dict[str, float]:
    """Step 5 (a speed target): the network against the starting one, end to end in one harness: ``speedup``,
    ``speedup_low`` (less its noise: what the target is judged by) and ``latency_ms``; {} without a speed target."""
    s = run.schedule
    if s.target_speedup is None:
        return {}
    speed = measured_speedup(run.model, run.current, (s.latency_batch, *run.input_shape), form=s.latency_form,
                             num_threads=s.latency_threads)
    return {"speedup": speed["speedup"], "speedup_low": speed["low"], "latency_ms": speed["ms"]}


def record(run: Run, iteration: int, *, before: float, after: float, removed: int, steps: int,
           seconds: float) -> dict:
    """Step 6: one history row from the run's analysis (parameters, GFLOPs per image, every group's width)."""
    row = {"iteration": iteration, "filters_removed": removed, "fraction_removed": removed / run.total,
           "params": run.net.params(), "gflops": run.net.flops() / 1e9,
           "accuracy_before_finetune": before, "accuracy_after_finetune": after, "finetune_steps": steps,
           "time_s": seconds}
    row.update({f"filters:{g}": w for g, w in run.net.widths.items()})
    return row


def save(run: Run) -> None:
    """The checkpoint, written by rank 0 alone; no rank runs ahead of it on disk."""
    if run.checkpoint:
        if run.collective.rank == 0:
            checkpointing.save(run.checkpoint, run.current, run.schedule, run.baseline_fingerprint, run.history,
                               run.model_iteration)
        run.collective.barrier()


def below_floor(schedule: PruningSchedule, row: Mapping) -> bool:
    """The accuracy floor broken by this row (after its fine-tune)."""
    return schedule.min_accuracy is not None and row["accuracy_after_finetune"] < schedule.min_accuracy


def done(run: Run) -> bool:
    """Whether the run has reached its target (or broken its floor)."""
    s, row = run.schedule, run.history.iloc[-1]
    if below_floor(s, row):
        return True
    if s.target_fraction is not None and row["fraction_removed"] >= s.target_fraction - 1e-9:
        return True
    if run.planner is not None:                 # every budget at once: the speedup less its noise, exact counts
        low = row.get("speedup_low")
        return run.planner.met(widths_of(row), None if low is None or math.isnan(low) else float(low))
    return s.target_gflops is not None and row["gflops"] <= s.target_gflops
