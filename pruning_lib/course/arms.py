"""The other sides of notebook 03's comparisons, each with Prune–Train–Repeat's own recipe.

Every comparison changes one thing and keeps the rest (the same data, loss, learning rate and
schedule), so a gap can only come from that one thing:

- `one_shot_same_budget`: everything removed **at once**, to the fraction Prune–Train–Repeat reached,
  then fine-tuned for the **total** number of steps Prune–Train–Repeat fine-tuned (one iteration of
  the same loop: the same ranking, FLOPs regularisation, blocks and loss);
- `from_scratch`: the pruned architecture with fresh weights, trained on the same data with the
  same loss for at most a given number of steps (1x and 3x the pruned network's budget in the notebook), stopped
  on a validation plateau with its best weights kept, the rule of the pruned network's final fine-tune.

`budget_curve` runs the first comparison at several fine-tune budgets (the loop against one shot, each pair with
the same total steps): where "too much at once cannot be repaired" holds, and where it does not.

`checkpointed_run` is the notebooks' Prune–Train–Repeat run: the profile's schedule, a checkpoint after every
iteration (a re-run resumes), and the first network within a budget kept.

`FirstWithin` is a Prune–Train–Repeat callback that keeps the model of the first iteration within a FLOPs
and parameter budget (the post's 3x and 4x): the network a practitioner with that budget would ship.

`asked_for_the_claim` is notebook 04's run: the loop asked for the post's claim itself, "3× faster and 4× smaller",
measured on this machine (`cost.budgets`), then the final fine-tune.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pandas as pd
import torch.nn.functional as F
from torch import nn

from .. import distributed
from ..measure.counting import count_flops, count_parameters
from ..recover import train
from ..recover.evaluation import correct, evaluate
from ..checkpoints import plain_value, save_pruned
from ..surgery import load_pruned
from ..recover.iterative import PruningSchedule, fingerprint, prune_train_repeat
from ..models import scratch_model
from ..runtime import seed_everything
from . import experiment, lessons
from .paths import checkpoints_dir
from .profiles import Profile

__all__ = ["FirstWithin", "LossAfterPrune", "asked_for_the_claim", "budget_curve", "checkpointed_run", "from_scratch",
           "one_shot_same_budget"]


def one_shot_same_budget(baseline: nn.Module, history: pd.DataFrame, schedule: PruningSchedule,
                         train_loader: Iterable, val_loader: Iterable, *, input_shape: Sequence[int],
                         checkpoint=None, callbacks: Sequence = ()) -> tuple[nn.Module, pd.DataFrame]:
    """Prune `baseline` once to where the Prune–Train–Repeat run of `history` ended, with its whole budget.

    Returns ``(model, history)`` of a one-iteration run of the same `schedule` that removes all of
    ``history``'s filters at once and fine-tunes for the sum of its fine-tune steps.
    """
    removed = int(history["filters_removed"].iloc[-1])
    steps = int(history["finetune_steps"].sum())
    once = dataclasses.replace(schedule, filters_per_iteration=removed, fraction_per_iteration=None,
                               finetune_steps=steps, target_fraction=float(history["fraction_removed"].iloc[-1]))
    return prune_train_repeat(baseline, train_loader, val_loader, once, input_shape=input_shape,
                              checkpoint=checkpoint, restart_stale=True, callbacks=callbacks, progress=False)


class LossAfterPrune:
    """A `prune_train_repeat` callback: the validation loss right after each prune, before its fine-tune.

    A two-class task's accuracy floors at 50% (a broken network still guesses one class), so the loss
    shows how deep a prune cuts where the accuracy cannot: ``losses`` holds one value per prune.
    """

    def __init__(self, val_batches: Sequence) -> None:
        self.val_batches, self.losses = list(val_batches), []

    def on_prune(self, row: dict, model: nn.Module) -> None:
        self.losses.append(float(evaluate(model, self.val_batches)["loss"]))


def budget_curve(baseline: nn.Module, schedule: PruningSchedule, steps_per_iteration: Sequence[int],
                 train_loader: Iterable, val_batches: Sequence, test_batches: Sequence, *,
                 input_shape: Sequence[int]) -> pd.DataFrame:
    """Prune–Train–Repeat against everything at once with the same total budget, at several budgets.

    For each number of fine-tune steps per iteration: the loop (`schedule` with those steps), then
    `one_shot_same_budget` from its history; both on the same test images.  Returns one row per budget:
    total steps, each side's test accuracy (points) and MFLOPs, the gap (loop − one shot) with its noise
    (two standard errors of the paired difference), and the worst validation loss right after a prune.
    """
    rows = []
    for steps in steps_per_iteration:
        loop_after, once_after = LossAfterPrune(val_batches), LossAfterPrune(val_batches)
        loop, history = prune_train_repeat(baseline, train_loader, val_batches,
                                           dataclasses.replace(schedule, finetune_steps=int(steps)),
                                           input_shape=input_shape, callbacks=[loop_after], progress=False)
        once, _ = one_shot_same_budget(baseline, history, dataclasses.replace(schedule, finetune_steps=int(steps)),
                                       train_loader, val_batches, input_shape=input_shape, callbacks=[once_after])
        entry = lessons.compare("the loop beats one shot", {"loop": correct(loop, test_batches),
                                                             "one shot": correct(once, test_batches)},
                                threshold_points=2.0)
        rows.append({"steps per iteration": int(steps), "total steps": int(history["finetune_steps"].sum()),
                     "loop %": entry["measured"]["loop"], "one shot %": entry["measured"]["one shot"],
                     "gap (points)": entry["gap_points"], "noise (±points)": entry["noise_points"],
                     "loop MFLOPs": count_flops(loop, (1, *input_shape)) / 1e6,
                     "one shot MFLOPs": count_flops(once, (1, *input_shape)) / 1e6,
                     "loop: worst loss after a prune": max(loop_after.losses),
                     "one shot: loss after its prune": once_after.losses[-1]})
    return pd.DataFrame(rows)


def from_scratch(pruned: nn.Module, template: nn.Module, train_loader: Iterable, *, steps: int, lr: float,
                 loss_fn: Callable = F.cross_entropy, lr_schedule: str = "constant", seed: int = 0,
                 val_loader: Iterable | None = None, patience: int | None = None,
                 eval_every: int | None = None) -> nn.Module:
    """`pruned`'s architecture with fresh weights (`models.scratch_model`), trained for at most `steps` steps.

    `template` is a freshly built unpruned model of the architecture; `loss_fn` the same loss the
    pruned network was fine-tuned with.  With `val_loader` (and `patience`, `eval_every`), training stops when the
    validation accuracy has not improved for `patience` evaluations and the best weights are kept (`train.Plateau`):
    the stopping rule and the selection of `experiment.final_fine_tune`, so a pruned network fine-tuned that way and
    this one are chosen alike.  Without it, exactly `steps` steps and the last weights.  Returns the trained model in
    eval mode; ``model.history`` is fit's history (``history["step"].max()``: the steps it took).
    """
    if val_loader is not None and (patience is None or eval_every is None):
        raise ValueError("from_scratch stops on a validation plateau when given val_loader: give patience and "
                         "eval_every too (the profile's P.patience and P.eval_every)")
    small = scratch_model(pruned, template, seed=seed)
    seed_everything(seed)
    plateau = [train.Plateau(patience)] if val_loader is not None else []
    history = train.fit(small, train_loader, steps=steps, lr=lr, loss_fn=loss_fn, lr_schedule=lr_schedule,
                        val_loader=val_loader, eval_every=eval_every if val_loader is not None else None,
                        callbacks=plateau, progress=False)
    if plateau and plateau[0].best_state is not None:
        small.load_state_dict(plateau[0].best_state)
    small.history = history
    return small.eval()


class FirstWithin:
    """Keeps a copy of the model of the first iteration that meets a budget: "prune until it is small enough".

    A `prune_train_repeat` callback: an iteration qualifies when its FLOPs are at most
    ``dense_gflops / min_flops_ratio`` and its parameters at most ``dense_params / min_params_ratio``.
    The first one is kept in ``model`` (eval mode), its history row in ``row`` (``None`` while none qualified).

    With `path` (and `template`, a freshly built unpruned model, and `key`, plain data naming the run), the
    kept model is also saved there, and read back when a resumed run starts: an interrupted run that
    resumes after the qualifying iteration still knows its model.  A file with another `key` is ignored.
    """

    def __init__(self, dense_gflops: float, dense_params: int, *, min_flops_ratio: float = 3.0,
                 min_params_ratio: float = 4.0, path=None, template: nn.Module | None = None,
                 key: dict | None = None) -> None:
        self.max_gflops, self.max_params = dense_gflops / min_flops_ratio, dense_params / min_params_ratio
        self.model: nn.Module | None = None
        self.row: dict | None = None
        self.path, self.key = path, key
        if path is not None and template is not None and Path(path).exists():
            try:
                model, meta = load_pruned(path, template)
            except ValueError:
                return
            if meta.get("key") == key:
                self.model, self.row = model.eval(), meta["row"]

    def on_iteration(self, row: dict, model: nn.Module) -> None:
        if self.row is None and row["gflops"] <= self.max_gflops and row["params"] <= self.max_params:
            self.model, self.row = copy.deepcopy(model).eval(), {k: plain_value(v) for k, v in row.items()}
            if self.path is not None and distributed.current().rank == 0:     # one writer under torchrun
                save_pruned(self.model, self.path, meta={"key": self.key, "row": self.row})


def checkpointed_run(baseline: nn.Module, profile: Profile, criterion: str, train_loader: Iterable,
                     val_batches: Sequence, *, callbacks: Sequence = (), min_flops_ratio: float = 3.0,
                     min_params_ratio: float = 4.0, **changes) -> tuple[nn.Module, pd.DataFrame, FirstWithin]:
    """Prune–Train–Repeat from `baseline` with `profile`'s schedule for `criterion` (`changes` override fields).

    Checkpointed after every iteration under ``checkpoints/<run>_<criterion>[_<change><value>...]_iterative.pt``:
    running it again resumes where it stopped, or reads a finished run back; a checkpoint of another baseline
    or schedule is started afresh.  Returns ``(final model, history, keep)``: `keep` (`FirstWithin`, saved beside
    the checkpoint) holds the first network with at least `min_flops_ratio` fewer FLOPs and `min_params_ratio`
    fewer parameters than `baseline`, or ``None`` if no iteration got there.
    """
    schedule = experiment.schedule(criterion, profile, **changes)
    tag = "_".join([experiment.run_name(profile), criterion, *(f"{k}{v}" for k, v in sorted(changes.items()))])
    keep = FirstWithin(count_flops(baseline, (1, *profile.input_shape)) / 1e9, count_parameters(baseline),
                       min_flops_ratio=min_flops_ratio, min_params_ratio=min_params_ratio,
                       path=checkpoints_dir() / f"{tag}_first_within.pt", template=experiment.architecture(profile),
                       key={"baseline": fingerprint(baseline), "schedule": dataclasses.asdict(schedule)})
    final, history = prune_train_repeat(baseline, train_loader, val_batches, schedule, input_shape=profile.input_shape,
                                        callbacks=[keep, *callbacks], progress=False,
                                        checkpoint=checkpoints_dir() / f"{tag}_iterative.pt", restart_stale=True)
    return final, history, keep


def asked_for_the_claim(baseline: nn.Module, profile: Profile, *, speedup: float = 3.0, params_reduction: float = 4.0,
                        form: str = "deploy", batch: int | None = None, threads: int = 1,
                        callbacks: Sequence = ()) -> tuple[nn.Module, pd.DataFrame]:
    """Prune–Train–Repeat with Taylor asked for `speedup` times faster (measured here, in `form` at `batch`, with
    `threads` threads) **and** `params_reduction` times fewer parameters, then the profile's final fine-tune.

    Everything else is the profile's Taylor run (notebook 03's: ranking batches, fine-tune steps, loss, share per
    iteration, blocks of `multiple_of`); what changes is the cost of a filter: each cut is planned for both targets
    (`cost.budgets.BudgetPlanner`) instead of by FLOPs.  Returns ``(model in eval mode, history)``; the final
    fine-tune's steps are in ``history.attrs["final_steps"]``.
    """
    loaders = experiment.target_loaders(profile)
    schedule = experiment.schedule("taylor", profile, target_fraction=None, target_speedup=speedup,
                                   target_params_reduction=params_reduction, flops_lambda=0.0, latency_form=form,
                                   latency_batch=batch or profile.benchmark_batch, latency_threads=threads)
    model, history = prune_train_repeat(baseline, loaders["train"], list(loaders["val"]), schedule,
                                        input_shape=profile.input_shape, callbacks=callbacks, progress=False)
    final = experiment.final_fine_tune(model, profile, teacher=baseline)
    history.attrs["final_steps"] = int(final["step"].max()) if len(final) else 0
    return model.eval(), history
