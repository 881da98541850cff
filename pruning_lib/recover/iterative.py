"""Prune–Train–Repeat (Molchanov et al. 2017, Fig. 1; the post's "iterative pruning").

Each iteration (`steps`):
1. rank the filters with a criterion over a few batches (scores L2-normalised per layer, Eq. 9), optionally minus
   the paper's FLOPs regularisation, λ · (FLOPs one filter costs) (Sec. 2.3);
2. plan: the k globally lowest filters (a floor per layer: no layer is emptied), or, with a speed or parameter
   target, the widths that meet every target's share at the least importance (`cost.budgets`);
3. cut them, and analyse the network once (every other step reads that analysis);
4. fine-tune for n steps (optionally distilling from the starting network: `train.KnowledgeDistillation`);
5. evaluate on the validation set (and, with a speed target, time the network end to end), record, checkpoint.
It stops at a target: a fraction of filters removed, a FLOPs budget, a speedup and a parameter reduction, or an
accuracy floor.

Every iteration is checkpointed (`checkpointing`: model widths and weights, history, and a fingerprint of the
starting model; no optimizer state: every iteration fine-tunes with a fresh optimizer).  Each iteration re-seeds
everything from (seed, iteration), so an interrupted run resumed from its checkpoint ends in the same state as an
uninterrupted one.  The checkpoint is written atomically after an iteration ends, so Ctrl-C at any moment leaves
the last complete iteration on disk.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import processes, steps, train
from .. import distributed
from ..checkpoints import fingerprint
from ..plan import layer_floors
from .checkpointing import CheckpointMismatchError, resume
from .distill import KnowledgeDistillation
from .evaluation import evaluate
from .schedule import HISTORY_COLUMNS, PruningSchedule

__all__ = ["HISTORY_COLUMNS", "CheckpointMismatchError", "PruningSchedule", "fingerprint", "prune_train_repeat"]


def _start(run: steps.Run, restart_stale: bool, restart_argument: str) -> None:
    """The run's first state: resumed from its checkpoint, or the starting model recorded as row 0."""
    if processes.resume_everywhere(run.checkpoint, run.collective):
        try:
            run.current, run.history = resume(run.checkpoint, run.model, run.schedule, run.baseline_fingerprint)
        except CheckpointMismatchError as err:
            if not restart_stale:
                raise CheckpointMismatchError(f"{err}; delete it, use another checkpoint path, or pass "
                                              f"{restart_argument}=True to start over") from None
    if run.current is None:
        run.current = copy.deepcopy(run.model)
        run.net = steps.analyse(run.current, run.input_shape)
        acc = run.metric(run.current, run.val_loader)
        first = steps.record(run, 0, before=acc, after=acc, removed=0, steps=0, seconds=0.0)
        if run.schedule.target_speedup is not None:
            first.update(speedup=1.0, speedup_low=1.0, latency_ms=steps.judge(run)["latency_ms"])
        run.history = pd.DataFrame([first])
        run.history.attrs["model_iteration"] = 0
    else:
        run.net = steps.analyse(run.current, run.input_shape)
    run.model_iteration = run.history.attrs["model_iteration"]


def _iteration(run: steps.Run, iteration: int) -> bool:
    """One iteration: rank, plan, cut, fine-tune, judge, record, checkpoint.  Returns whether the run ends here
    (nothing left to cut, or a callback's stop)."""
    start = time.perf_counter()
    before_prune = copy.deepcopy(run.current) if run.schedule.min_accuracy is not None else None
    removed_before = int(run.history["filters_removed"].iloc[-1])
    if run.planner is None and steps.channels_to_remove(run) <= 0:
        return True
    scores = steps.rank(run, iteration)
    removed = steps.cut(run, steps.plan(run, scores), iteration)
    if removed == 0:
        return True
    before = run.metric(run.current, run.val_loader)
    row = steps.record(run, iteration, before=before, after=math.nan, removed=removed_before + removed, steps=0,
                       seconds=0.0)
    stop = train.notify(run.callbacks, "on_prune", dict(row), run.current)
    row["finetune_steps"], stopped = steps.fine_tune(run)
    row["accuracy_after_finetune"] = run.metric(run.current, run.val_loader)
    row.update(steps.judge(run))
    row["time_s"] = time.perf_counter() - start
    run.history = pd.concat([run.history, pd.DataFrame([row])], ignore_index=True)
    if steps.below_floor(run.schedule, row):     # keep the last model that met the floor
        run.current = before_prune
        run.net = steps.analyse(run.current, run.input_shape)
    else:
        run.model_iteration = iteration
    run.history.attrs["model_iteration"] = run.model_iteration
    steps.save(run)
    stop = train.notify(run.callbacks, "on_iteration", dict(row), run.current) or stop or stopped
    return processes.any_rank(run.collective, stop)


def prune_train_repeat(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable,
    schedule: PruningSchedule,
    *,
    input_shape: Sequence[int] | None = None,
    example_inputs: Any = None,
    checkpoint: str | Path | None = None,
    restart_stale: bool = False,
    restart_argument: str = "restart_stale",
    callbacks: Sequence = (),
    progress: bool = True,
    loss_fn: Callable | None = None,
    metric: Callable[[nn.Module, Iterable], float] | None = None,
    optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer] | None = None,
) -> tuple[nn.Module, pd.DataFrame]:
    """Run Prune–Train–Repeat on a copy of `model` (left unchanged) until the schedule's target.

    Args:
        model: the trained, unpruned starting model (the baseline; also the teacher when distilling).
        train_loader: ranking batches and fine-tuning come from it (re-seeded every iteration).
        val_loader: accuracy before and after each fine-tune is measured on it.
        input_shape: one image's shape (C, H, W), for FLOPs ...
        example_inputs: ... or, for a model with several inputs, a batch of them (a tuple or dict of tensors, as
            the loaders' inputs are): FLOPs are counted on its first example.
        checkpoint: a file; when it exists the run resumes from it, and it is rewritten
            (atomically) after every iteration.  It stores a fingerprint of `model`'s weights
            and the schedule, and a run with another model or schedule refuses it
            (`CheckpointMismatchError`) ...
        restart_stale: ... unless this is True: then the stale checkpoint is replaced by a fresh run.
        restart_argument: the name the refusal tells the caller to pass (`pruning_lib.prune` calls it ``restart``).
        callbacks: objects with any of ``on_start(history, model)`` (once, with the history so far),
            ``on_prune(row, model)`` (after pruning, before fine-tuning; ``accuracy_after_finetune``
            is NaN), ``on_iteration(row, model)``, and `train.Callback`'s ``on_step`` / ``on_epoch``
            (during fine-tuning; only for `train.Callback` instances).  Returning True from on_prune /
            on_iteration, or stopping fit, ends the run after that iteration.
        progress: a tqdm bar over iterations.
        loss_fn: ``loss_fn(outputs, targets)``, a batch mean, for ranking (Taylor) and fine-tuning;
            cross-entropy (or distillation, with ``schedule.distill``) by default.
        metric: ``metric(model, val_loader) -> float``, higher = better, recorded in the accuracy columns
            and compared with ``schedule.min_accuracy``; top-1 accuracy by default.
        optimizer: ``optimizer(parameters) -> torch.optim.Optimizer``, called for every fine-tune (the
            pruned parameters are new tensors); Adam with ``schedule.lr`` by default.

    Returns:
        (pruned model in eval mode, history): one row per iteration (row 0: the starting model) with
        ``HISTORY_COLUMNS`` and the filters left per layer (``filters:<conv>``).  Accuracies are
        fractions on `val_loader`; gflops are per image; ``finetune_steps`` counts the steps done.
        ``history.attrs["model_iteration"]`` is the row the returned model belongs to (the last
        one, except after an accuracy-floor stop).

    Several processes (launched by ``torchrun``, `distributed`): every rank calls it with the same model and the
    same arguments.  The loop gives each rank its share of the loaders (DataLoaders: batch_size is per process),
    adds the criterion's sums over ranks, broadcasts rank 0's plan, checks that every rank holds the same weights
    after each cut, fine-tunes under DistributedDataParallel (SyncBatchNorm on CUDA), adds up the validation
    counts, and rank 0 alone writes the checkpoint (on a file system every rank reads).  Callbacks run on every
    rank; one that stops the run stops it everywhere, but ``on_step`` / ``on_epoch`` must decide alike on every
    rank (the loss they see is the rank's own).  ``target_speedup`` is refused (timing needs the machine alone).
    """
    if loss_fn is not None and schedule.distill:
        raise ValueError("give either loss_fn or schedule.distill (distillation is a classification loss of its own)")
    rank_loss = loss_fn or F.cross_entropy              # ranking reads the task's loss, never the teacher's
    loss_fn = loss_fn or (KnowledgeDistillation(model, schedule.distill, schedule.temperature) if schedule.distill
                          else F.cross_entropy)
    collective = distributed.current()
    if collective.world_size > 1:
        train_loader, val_loader, metric = processes.for_processes(collective, schedule, train_loader, val_loader,
                                                                   metric, model)
    if (input_shape is None) == (example_inputs is None):
        raise ValueError("give input_shape (one example's shape, e.g. (3, 32, 32)) or, for a model with several "
                         "inputs, example_inputs (a tuple or dict of tensors)")
    if example_inputs is not None and schedule.target_speedup is not None:
        raise ValueError("target_speedup times the network on random inputs of one shape: it needs input_shape (a "
                         "model with one input tensor)")
    shape = tuple(input_shape) if input_shape is not None else example_inputs
    start = steps.analyse(model, shape)
    run = steps.Run(model=model, schedule=schedule, input_shape=shape, train_loader=train_loader,
                    val_loader=val_loader, metric=metric or (lambda m, loader: evaluate(m, loader)["accuracy"]),
                    optimizer=optimizer or (lambda params: torch.optim.Adam(params, lr=schedule.lr)),
                    loss_fn=loss_fn, rank_loss=rank_loss, collective=collective, callbacks=callbacks,
                    checkpoint=Path(checkpoint) if checkpoint else None, baseline_fingerprint=fingerprint(model),
                    floors=layer_floors(start.widths, min_keep=schedule.min_keep, max_fraction=schedule.max_fraction),
                    total=sum(w for g, w in start.widths.items() if g not in schedule.keep_whole),
                    planner=steps.budget_planner(model, schedule, shape))
    _start(run, restart_stale, restart_argument)
    train.notify(callbacks, "on_start", run.history.copy(), run.current)
    bar = tqdm(desc=f"prune-train-repeat ({schedule.criterion})", unit="iter", disable=not progress or collective.rank > 0)
    while not steps.done(run):
        if _iteration(run, int(run.history["iteration"].iloc[-1]) + 1):
            break
        row = run.history.iloc[-1]
        bar.update()
        bar.set_postfix(gflops=f"{row['gflops']:.4f}", acc=f"{row['accuracy_after_finetune']:.3f}")
    bar.close()
    if run.planner is not None:                              # what the cuts asked for, and what the tables cost
        run.history.attrs["budgets"] = run.planner.report()
    return run.current.eval(), run.history
