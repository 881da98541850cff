"""The other sides of notebook 03's comparisons, each with Prune–Train–Repeat's own recipe.

Every comparison changes one thing and keeps the rest (the same data, loss, learning rate and
schedule), so a gap can only come from that one thing:

- `one_shot_same_budget`: everything removed **at once**, to the fraction Prune–Train–Repeat reached,
  then fine-tuned for the **total** number of steps Prune–Train–Repeat fine-tuned (one iteration of
  the same loop: the same ranking, FLOPs regularisation, blocks and loss);
- `from_scratch`: the pruned architecture with fresh weights, trained on the same data with the
  same loss for a given number of steps (1x and 3x the pruned network's budget in the notebook).

`FirstWithin` is a Prune–Train–Repeat callback that keeps the model of the first iteration within a FLOPs
and parameter budget (the post's 3x and 4x): the network a practitioner with that budget would ship.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pandas as pd
import torch.nn.functional as F
from torch import nn

from ..recover import train
from ..checkpoints import plain_value, save_pruned
from ..surgery import load_pruned
from ..recover.iterative import PruningSchedule, prune_train_repeat
from ..models import scratch_model
from ..runtime import seed_everything

__all__ = ["FirstWithin", "from_scratch", "one_shot_same_budget"]


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


def from_scratch(pruned: nn.Module, template: nn.Module, train_loader: Iterable, *, steps: int, lr: float,
                 loss_fn: Callable = F.cross_entropy, lr_schedule: str = "constant", seed: int = 0) -> nn.Module:
    """`pruned`'s architecture with fresh weights (`models.scratch_model`), trained for `steps` steps.

    `template` is a freshly built unpruned model of the architecture; `loss_fn` the same loss the
    pruned network was fine-tuned with.  Returns the trained model in eval mode.
    """
    small = scratch_model(pruned, template, seed=seed)
    seed_everything(seed)
    train.fit(small, train_loader, steps=steps, lr=lr, loss_fn=loss_fn, lr_schedule=lr_schedule, progress=False)
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
            if self.path is not None:
                save_pruned(self.model, self.path, meta={"key": self.key, "row": self.row})
