"""Prune–Train–Repeat (Molchanov et al. 2017, Fig. 1; the post's "iterative pruning").

Each iteration:
1. rank the filters with a criterion over a few batches (scores L2-normalised per layer, Eq. 9);
2. optionally subtract the paper's FLOPs regularisation, λ · (FLOPs one filter costs) (Sec. 2.3);
3. remove the k globally lowest filters (a floor per layer: no layer is emptied);
4. fine-tune for n steps (optionally distilling from the starting network: `train.KnowledgeDistillation`);
5. evaluate on the validation set and record.
It stops at a target: a fraction of filters removed, a FLOPs budget, or an accuracy floor.

Every iteration is checkpointed (model widths and weights, history, and a fingerprint of the starting model;
no optimizer state: every iteration fine-tunes with a fresh optimizer).  Each iteration re-seeds everything
from (seed, iteration), so an interrupted run resumed from its checkpoint ends in the same state as an
uninterrupted one.
The checkpoint is written atomically after an iteration ends, so Ctrl-C at any moment leaves
the last complete iteration on disk.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import train
from . import processes
from .. import distributed
from ..checkpoints import fingerprint, plain_value, save_pruned
from .distill import KnowledgeDistillation
from .evaluation import evaluate
from ..graph.groups import group_widths
from ..cost.budgets import BudgetPlanner, Targets
from ..measure.counting import count_flops, count_parameters
from ..measure.latency import measured_speedup
from ..plan import flops_per_channel, layer_floors, plan_from_scores, plan_keeping, regularised_scores
from ..rank.criteria import rank_filters
from ..runtime import iteration_seed
from ..surgery import load_pruned, prune_filters

__all__ = ["HISTORY_COLUMNS", "CheckpointMismatchError", "PruningSchedule", "fingerprint", "prune_train_repeat"]

HISTORY_COLUMNS = ("iteration", "filters_removed", "fraction_removed", "params", "gflops",
                   "accuracy_before_finetune", "accuracy_after_finetune", "finetune_steps", "time_s")


@dataclass(frozen=True)
class PruningSchedule:
    """What one Prune–Train–Repeat run does.  Give at least one target.

    Attributes:
        criterion: a name from ``rank.criteria.CRITERIA`` ("taylor", "l1", "apoz", "random", ...).
        filters_per_iteration: filters removed per iteration (the paper's and the post's k) ...
        fraction_per_iteration: ... or, when set, this share of the filters *left* (so every cut is
            equally deep: the last iterations remove fewer filters than the first).
        finetune_steps: optimisation steps (batches) of fine-tuning after each removal.
        lr: Adam learning rate of that fine-tuning (a fresh optimizer each iteration).
        lr_schedule: ``"constant"`` or ``"cosine"`` (from `lr` to 0 within each fine-tune; `train.fit`).
        rank_batches: training batches the criterion sees per iteration.
        target_fraction: stop once this fraction of all prunable filters is gone (the last
            iteration removes fewer filters to land on it exactly).
        target_gflops: ... or once GFLOPs per image are at most this (may overshoot by one iteration).
        target_speedup: ... or once the network runs this many times faster than the starting one, measured end
            to end on this machine beyond the noise (`measure.measured_speedup`, in `latency_form` at batch
            `latency_batch` with `latency_threads` threads) ...
        target_params_reduction: ... and/or once it has this many times fewer parameters.  With either of these
            two every iteration's cut is planned for all the targets given at once (`cost.budgets.BudgetPlanner`:
            time by a latency model of the network's blocks measured on this machine, parameters and FLOPs
            counted exactly; `target_gflops` then joins as a third budget): one width per group, in steps of
            `multiple_of` (or `latency_step` when `multiple_of` is 1), chosen at the least importance so that each
            target covers ``fraction_per_iteration`` (default 0.1) of its remaining way per iteration, all arriving
            together; the time saved is checked end to end before the cut is made.  `flops_lambda` must be 0.
        min_accuracy: ... or before validation accuracy after fine-tuning falls below this fraction:
            the iteration that breaks the floor is recorded, but the model returned (and
            checkpointed) is the one from the iteration before it.
        flops_lambda: FLOPs regularisation strength λ (0: off); see `regularised_scores`.
        min_keep: the floor of filters kept in every layer (>= 1).
        max_fraction: a per-layer cap: no layer loses more than this share of its starting filters
            (`plan.layer_floors`, as Torch-Pruning's ``max_pruning_ratio``); None: no cap.
        multiple_of: every layer that loses filters keeps a multiple of this many (16 suits
            AVX-512 CPUs: odd widths vectorise badly); each iteration then removes at most
            `filters_per_iteration`, in blocks of this size.
        distill: weight α of the dense network's soft predictions in the fine-tuning loss
            (`train.KnowledgeDistillation`, the starting model is the teacher); 0: plain cross-entropy.
        temperature: the distillation temperature T.
        seed: seeds the batches, dropout and the "random" criterion of every iteration.
    """

    criterion: str = "taylor"
    filters_per_iteration: int = 48
    fraction_per_iteration: float | None = None
    finetune_steps: int = 40
    lr: float = 5e-4
    lr_schedule: str = "constant"
    rank_batches: int = 4
    target_fraction: float | None = None
    target_gflops: float | None = None
    target_speedup: float | None = None
    target_params_reduction: float | None = None
    min_accuracy: float | None = None
    flops_lambda: float = 0.0
    min_keep: int = 1
    max_fraction: float | None = None
    multiple_of: int = 1
    distill: float = 0.0
    temperature: float = 4.0
    seed: int = 0
    latency_form: str = "deploy"
    latency_batch: int = 64
    latency_threads: int = 1
    latency_step: int = 8

    def __post_init__(self):
        if (self.target_fraction is None and self.target_gflops is None and self.min_accuracy is None
                and self.target_speedup is None and self.target_params_reduction is None):
            raise ValueError("give a target: target_fraction, target_gflops, target_speedup, target_params_reduction "
                             "or min_accuracy")
        if self.target_speedup is not None and not self.target_speedup > 1:
            raise ValueError(f"target_speedup is how many times faster, > 1; got {self.target_speedup}")
        if self.target_params_reduction is not None and not self.target_params_reduction > 1:
            raise ValueError(f"target_params_reduction is how many times fewer parameters, > 1; got "
                             f"{self.target_params_reduction}")
        if self.budgeted and self.flops_lambda:
            raise ValueError("target_speedup and target_params_reduction weigh each cut by what it saves; flops_lambda "
                             "would weigh it by FLOPs as well: set flops_lambda=0")
        if self.target_fraction is not None and not 0 < self.target_fraction < 1:
            raise ValueError(f"target_fraction must be in (0, 1), got {self.target_fraction}")
        if self.target_gflops is not None and self.target_gflops <= 0:
            raise ValueError(f"target_gflops must be > 0, got {self.target_gflops}")
        if self.min_accuracy is not None and not 0 <= self.min_accuracy <= 1:
            raise ValueError(f"min_accuracy is a fraction in [0, 1], got {self.min_accuracy}")
        if self.filters_per_iteration < 1 or self.finetune_steps < 0 or self.rank_batches < 1:
            raise ValueError("filters_per_iteration and rank_batches must be >= 1 and finetune_steps >= 0; got "
                             f"{self.filters_per_iteration}, {self.rank_batches}, {self.finetune_steps}")
        if self.min_keep < 1:
            raise ValueError(f"min_keep must be >= 1 so no layer is emptied, got {self.min_keep}")
        if self.fraction_per_iteration is not None and not 0 < self.fraction_per_iteration < 1:
            raise ValueError(f"fraction_per_iteration must be in (0, 1), got {self.fraction_per_iteration}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.max_fraction is not None and not 0 < self.max_fraction <= 1:
            raise ValueError(f"max_fraction must be in (0, 1], got {self.max_fraction}")
        if self.multiple_of < 1:
            raise ValueError(f"multiple_of must be >= 1, got {self.multiple_of}")
        if self.flops_lambda < 0:
            raise ValueError(f"flops_lambda must be >= 0, got {self.flops_lambda}")
        if not 0 <= self.distill <= 1 or self.temperature <= 0:
            raise ValueError(f"distill must be in [0, 1] and temperature > 0, got {self.distill}, {self.temperature}")


    @property
    def budgeted(self) -> bool:
        """Whether each cut is planned for budgets (a speedup or a parameter reduction) by `cost.budgets`."""
        return self.target_speedup is not None or self.target_params_reduction is not None


class CheckpointMismatchError(ValueError):
    """A checkpoint was made from another starting model or with another schedule."""


def _record(model, iteration, acc_before, acc_after, input_shape, removed, total, steps, seconds) -> dict:
    row = {"iteration": iteration, "filters_removed": removed, "fraction_removed": removed / total,
           "params": count_parameters(model), "gflops": count_flops(model, (1, *input_shape)) / 1e9,
           "accuracy_before_finetune": acc_before, "accuracy_after_finetune": acc_after,
           "finetune_steps": steps, "time_s": seconds}
    row.update({f"filters:{n}": k for n, k in group_widths(model).items()})
    return row


def _reseed(schedule: PruningSchedule, iteration: int, loader) -> None:
    seed = iteration_seed(schedule.seed, iteration)
    torch.manual_seed(seed)
    if getattr(loader, "generator", None) is not None:
        loader.generator.manual_seed(seed)
    if hasattr(getattr(loader, "sampler", None), "set_epoch"):      # a DistributedSampler shuffles by its epoch
        loader.sampler.set_epoch(seed)


def _below_floor(schedule: PruningSchedule, row: Mapping) -> bool:
    return schedule.min_accuracy is not None and row["accuracy_after_finetune"] < schedule.min_accuracy


def _row_widths(row: Mapping) -> dict[str, int]:
    return {c.removeprefix("filters:"): int(v) for c, v in row.items() if str(c).startswith("filters:")}


def _done(schedule: PruningSchedule, row: Mapping, planner: BudgetPlanner | None = None) -> bool:
    if _below_floor(schedule, row):
        return True
    if schedule.target_fraction is not None and row["fraction_removed"] >= schedule.target_fraction - 1e-9:
        return True
    if planner is not None:                     # every budget at once: the speedup less its noise, exact counts
        return planner.met(_row_widths(row), row.get("speedup_low"))
    return schedule.target_gflops is not None and row["gflops"] <= schedule.target_gflops


def _speed(reference: nn.Module, model: nn.Module, schedule: PruningSchedule, input_shape) -> dict[str, float]:
    return measured_speedup(reference, model, (schedule.latency_batch, *input_shape), form=schedule.latency_form,
                            num_threads=schedule.latency_threads)


def budget_planner(model: nn.Module, schedule: PruningSchedule, input_shape: Sequence[int],
                   progress: bool = False) -> BudgetPlanner | None:
    """The planner of a run with a speedup or parameter target (None otherwise), from the starting model."""
    if not schedule.budgeted:
        return None
    flops = (count_flops(model, (1, *input_shape)) / 1e9 / schedule.target_gflops
             if schedule.target_gflops is not None else None)
    targets = Targets(speedup=schedule.target_speedup, params_reduction=schedule.target_params_reduction,
                      flops_reduction=flops if flops and flops > 1 else None)
    return BudgetPlanner(model, (schedule.latency_batch, *input_shape), targets, form=schedule.latency_form,
                         num_threads=schedule.latency_threads, share=schedule.fraction_per_iteration or 0.1,
                         step=schedule.multiple_of if schedule.multiple_of > 1 else schedule.latency_step,
                         progress=progress)


def _budget_plan(planner: BudgetPlanner, model: nn.Module, scores, floors, last: Mapping) -> dict:
    """This iteration's cut for the run's budgets (`cost.budgets.BudgetPlanner.plan`), as a plan."""
    widths = planner.plan(model, scores, _row_widths(last), floors, speedup=last.get("speedup"),
                          latency_ms=last.get("latency_ms"))
    return plan_keeping(scores, {g: w for g, w in widths.items() if g in scores})


def _history_dict(history: pd.DataFrame) -> dict[str, list]:
    return {col: [plain_value(v) for v in history[col].tolist()] for col in history.columns}


_AGAIN = "delete it, use another checkpoint path, or pass restart_stale=True to start over"


def _check_meta(path: Path, meta, schedule: PruningSchedule, baseline_fingerprint: str) -> pd.DataFrame:
    """The checkpoint's history, after checking that its metadata belongs to this run and is consistent."""
    if not isinstance(meta, dict):
        raise CheckpointMismatchError(f"{path}: its metadata is a {type(meta).__name__}, not a dict; {_AGAIN}")
    missing = [k for k in ("schedule", "baseline_fingerprint", "history", "model_iteration") if k not in meta]
    if missing:
        raise CheckpointMismatchError(f"{path} lacks {missing} in its metadata: not a Prune–Train–Repeat checkpoint; {_AGAIN}")
    if meta["baseline_fingerprint"] != baseline_fingerprint:
        raise CheckpointMismatchError(f"{path} was made from another starting model (weights fingerprint differs); {_AGAIN}")
    if meta["schedule"] != asdict(schedule):
        saved = meta["schedule"] if isinstance(meta["schedule"], dict) else {}
        differ = {k: (saved.get(k), v) for k, v in asdict(schedule).items() if saved.get(k) != v}
        raise CheckpointMismatchError(f"{path} was made with another schedule: "
                                      + ", ".join(f"{k} {a!r} (now {b!r})" for k, (a, b) in differ.items()) + f"; {_AGAIN}")
    try:
        history = pd.DataFrame(meta["history"])
    except (ValueError, TypeError) as err:
        raise CheckpointMismatchError(f"{path}: its history is not a table ({err}); {_AGAIN}") from None
    lacking = [c for c in HISTORY_COLUMNS if c not in history.columns]
    if lacking or history.empty:
        raise CheckpointMismatchError(f"{path}: its history lacks the columns {lacking} or is empty; {_AGAIN}")
    for column in ("accuracy_before_finetune", "accuracy_after_finetune", "gflops", "params", "iteration"):
        if not pd.api.types.is_numeric_dtype(history[column]):
            raise CheckpointMismatchError(f"{path}: history column {column!r} is not numeric; {_AGAIN}")
    iterations = history["iteration"].tolist()
    model_iteration = meta["model_iteration"]
    if iterations != list(range(len(iterations))):
        raise CheckpointMismatchError(f"{path}: history iterations are {iterations}, not 0..{len(iterations) - 1}; {_AGAIN}")
    if isinstance(model_iteration, bool) or not isinstance(model_iteration, int) or not 0 <= model_iteration < len(history):
        raise CheckpointMismatchError(f"{path}: model_iteration={model_iteration!r} is not a row of its "
                                      f"{len(history)}-row history; {_AGAIN}")
    return history


def _resume(path: Path, model: nn.Module, schedule: PruningSchedule, baseline_fingerprint: str):
    try:
        pruned, meta = load_pruned(path, model)
    except ValueError as err:                 # damaged, foreign, or another architecture
        raise CheckpointMismatchError(f"{err}; {_AGAIN}") from None
    history = _check_meta(path, meta, schedule, baseline_fingerprint)
    widths = {c.removeprefix("filters:"): int(history[c].iloc[meta["model_iteration"]])
              for c in history.columns if c.startswith("filters:")}
    got = group_widths(pruned) if widths else None
    if widths and widths != got:
        raise CheckpointMismatchError(f"{path}: the saved model's widths {got} are not those of "
                                      f"history row {meta['model_iteration']} ({widths}); {_AGAIN}")
    trainable = {n: p.requires_grad for n, p in model.named_parameters()}
    for name, p in pruned.named_parameters():
        p.requires_grad_(trainable[name])
    pruned.train(model.training)
    history.attrs["model_iteration"] = meta["model_iteration"]
    return pruned, history


def _save(path: Path, model: nn.Module, schedule, baseline_fingerprint, history, model_iteration) -> None:
    """The model and the history so far; no optimizer state: every iteration builds a fresh optimizer."""
    save_pruned(model, path, meta={
        "schedule": asdict(schedule), "baseline_fingerprint": baseline_fingerprint,
        "iteration": int(history["iteration"].iloc[-1]), "model_iteration": int(model_iteration),
        "history": _history_dict(history)})


def prune_train_repeat(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable,
    schedule: PruningSchedule,
    *,
    input_shape: Sequence[int],
    checkpoint: str | Path | None = None,
    restart_stale: bool = False,
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
        input_shape: one image's shape (C, H, W), for FLOPs.
        checkpoint: a file; when it exists the run resumes from it, and it is rewritten
            (atomically) after every iteration.  It stores a fingerprint of `model`'s weights
            and the schedule, and a run with another model or schedule refuses it
            (`CheckpointMismatchError`) ...
        restart_stale: ... unless this is True: then the stale checkpoint is replaced by a fresh run.
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
    start_widths = group_widths(model)
    total = sum(start_widths.values())
    floors = layer_floors(start_widths, min_keep=schedule.min_keep, max_fraction=schedule.max_fraction)
    if loss_fn is not None and schedule.distill:
        raise ValueError("give either loss_fn or schedule.distill (distillation is a classification loss of its own)")
    rank_loss = loss_fn or F.cross_entropy              # ranking reads the task's loss, never the teacher's
    loss_fn = loss_fn or (KnowledgeDistillation(model, schedule.distill, schedule.temperature) if schedule.distill
                          else F.cross_entropy)
    collective = distributed.current()
    if collective.world_size > 1:
        train_loader, val_loader, metric = processes.for_processes(collective, schedule, train_loader, val_loader,
                                                                   metric, model)
    metric = metric or (lambda m, loader: evaluate(m, loader)["accuracy"])
    optimizer = optimizer or (lambda params: torch.optim.Adam(params, lr=schedule.lr))
    checkpoint = Path(checkpoint) if checkpoint else None
    baseline_fingerprint = fingerprint(model)
    current = history = None
    if processes.resume_everywhere(checkpoint, collective):
        try:
            current, history = _resume(checkpoint, model, schedule, baseline_fingerprint)
        except CheckpointMismatchError:
            if not restart_stale:
                raise
    planner = budget_planner(model, schedule, input_shape)
    if current is None:
        current = copy.deepcopy(model)
        acc = metric(current, val_loader)
        first = _record(current, 0, acc, acc, input_shape, 0, total, 0, 0.0)
        if schedule.target_speedup is not None:
            first.update(speedup=1.0, speedup_low=1.0, latency_ms=_speed(model, current, schedule, input_shape)["ms"])
        history = pd.DataFrame([first])
        history.attrs["model_iteration"] = 0
    model_iteration = history.attrs["model_iteration"]
    train.notify(callbacks, "on_start", history.copy(), current)
    bar = tqdm(desc=f"prune-train-repeat ({schedule.criterion})", unit="iter", disable=not progress or collective.rank > 0)
    while not _done(schedule, history.iloc[-1], planner):
        iteration = int(history["iteration"].iloc[-1]) + 1
        removed = int(history["filters_removed"].iloc[-1])
        k = (schedule.filters_per_iteration if schedule.fraction_per_iteration is None
             else max(1, round(schedule.fraction_per_iteration * (total - removed))))
        if schedule.target_fraction is not None:
            k = min(k, round(schedule.target_fraction * total) - removed)
        k = min(k, sum(max(n - floors[c], 0) for c, n in group_widths(current).items()))
        if k <= 0:
            break
        start = time.perf_counter()
        before_prune = copy.deepcopy(current) if schedule.min_accuracy is not None else None
        _reseed(schedule, iteration, train_loader)
        batches = list(itertools.islice(train_loader, schedule.rank_batches))
        scores = rank_filters(current, batches, schedule.criterion, seed=iteration_seed(schedule.seed, iteration),
                              loss_fn=rank_loss, collective=collective)
        cost = flops_per_channel(current, input_shape) if schedule.flops_lambda else {}
        scores = regularised_scores(scores, cost, schedule.flops_lambda)
        plan = (_budget_plan(planner, current, scores, floors, history.iloc[-1]) if planner is not None else
                plan_from_scores(scores, k, min_keep=floors, multiple_of=schedule.multiple_of))
        plan = collective.broadcast(plan)                 # rank 0's plan is everyone's
        k = sum(map(len, plan.values()))  # with multiple_of > 1, blocks may add up to fewer than asked
        if k == 0:
            break
        prune_filters(current, plan)
        if collective.world_size > 1:
            distributed.check_same(collective, fingerprint(current), f"the network after iteration {iteration}'s cut")
        before = metric(current, val_loader)
        row = _record(current, iteration, before, math.nan, input_shape, removed + k, total, 0, 0.0)
        stop = train.notify(callbacks, "on_prune", dict(row), current)
        if schedule.finetune_steps:
            with distributed.synchronised_batchnorm(current, collective):
                fitted = train.fit(collective.wrap(current), train_loader, steps=schedule.finetune_steps,
                                   optimizer=optimizer([p for p in current.parameters() if p.requires_grad]),
                                   eval_every=schedule.finetune_steps, loss_fn=loss_fn, lr_schedule=schedule.lr_schedule,
                                   callbacks=[cb for cb in callbacks if isinstance(cb, train.Callback)],
                                   progress=False)
            distributed.average_buffers(current, collective)     # BatchNorm's running statistics, one per process
            stop = stop or fitted.attrs.get("stopped_early", False)
            row["finetune_steps"] = int(fitted["step"].iloc[-1]) if len(fitted) else 0
        row["accuracy_after_finetune"] = metric(current, val_loader)
        if schedule.target_speedup is not None:                  # the judge: the real network, end to end
            speed = _speed(model, current, schedule, input_shape)
            row.update(speedup=speed["speedup"], speedup_low=speed["low"], latency_ms=speed["ms"])
        row["time_s"] = time.perf_counter() - start
        history = pd.concat([history, pd.DataFrame([row])], ignore_index=True)
        if _below_floor(schedule, row):     # keep the last model that met the floor
            current = before_prune
        else:
            model_iteration = iteration
        history.attrs["model_iteration"] = model_iteration
        if checkpoint:
            if collective.rank == 0:
                _save(checkpoint, current, schedule, baseline_fingerprint, history, model_iteration)
            collective.barrier()                          # no rank runs ahead of the checkpoint on disk
        bar.update()
        bar.set_postfix(gflops=f"{row['gflops']:.4f}", acc=f"{row['accuracy_after_finetune']:.3f}")
        stop = train.notify(callbacks, "on_iteration", dict(row), current) or stop
        if processes.any_rank(collective, stop):
            break
    bar.close()
    if planner is not None:                                  # what the cuts asked for, and what the tables cost
        history.attrs["budgets"] = planner.report()
    return current.eval(), history
