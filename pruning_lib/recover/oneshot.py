"""One-shot pruning: remove a fraction of all filters at once, with no fine-tuning, and measure the damage.

Notebook 02 uses this to compare ranking criteria by what they *do*, not only by how they
correlate with the oracle (Molchanov et al. 2017, Table 1):

1. `selection_scores`: the scores a criterion prunes with (L2-normalised per layer, Eq. 9;
   the oracle's |ΔC| stays raw: it is already in loss units, comparable across layers);
2. `prune_copy`: the globally lowest-scored filters removed from a *copy* of the model by real
   surgery (`plan.plan_from_scores` + `surgery.prune_filters`): the same for every criterion;
3. `one_shot`: that copy's accuracy, FLOPs, parameters and filters removed per layer (`OneShot`);
4. `sweep`: `one_shot` over several amounts and criteria, as a DataFrame.

Every network is pruned by channel groups (`graph.groups`; in a chain a group is one conv's filters), as in
`iterative.prune_train_repeat`: the scores are keyed by group, and
"filters" below means a group's channels.  Nothing here changes the model it is given.  The widget that
wires a slider to `one_shot` lives in `widgets.oneshot`; ``reports/ranking.json`` is written by `course.reports`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Sequence

import pandas as pd
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .evaluation import evaluate
from ..graph.groups import group_widths
from ..measure.counting import count_flops, count_parameters
from ..plan import Plan, plan_from_scores
from ..rank.criteria import Scores, normalize_per_layer
from ..surgery import prune_filters

__all__ = ["OneShot", "check_amount", "one_shot", "prune_copy", "removed_per_layer", "selection_scores", "sweep"]



@dataclass(frozen=True)
class OneShot:
    """What one-shot pruning at one amount gives (no fine-tuning).

    Attributes:
        criterion: the scores' name (for display).
        amount: the requested fraction of all prunable filters to remove, in [0, 1).
        filters_removed / filters_total: counts over all prunable convs.
        accuracy: top-1 accuracy of the pruned copy, a fraction in [0, 1]; loss: its mean cross-entropy.
        flops: FLOPs of one image's forward pass (2 per multiply-add); params: parameter count.
        removed / kept: filters removed from / left in each conv, ``{conv: count}`` in forward order.
        correct: per-image correctness (N,) on the loader (1.0 right), for paired comparisons.
    """

    criterion: str
    amount: float
    filters_removed: int
    filters_total: int
    accuracy: float
    loss: float
    flops: int
    params: int
    removed: dict[str, int]
    kept: dict[str, int]
    correct: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def fraction_removed(self) -> float:
        return self.filters_removed / self.filters_total


def selection_scores(
    raw: Mapping[str, Scores], *, normalize: str | None = "l2", keep_raw: Sequence[str] = ("oracle", "random")
) -> dict[str, dict[str, torch.Tensor]]:
    """The scores each criterion prunes with: ``{criterion: {conv: (C,) scores}}``, as `criteria.rank_all` gives them.

    Every criterion is normalised per layer (Eq. 9, ``normalize="l2"``) so one global threshold can
    compare layers, as in the paper and in `iterative.prune_train_repeat`; the names in `keep_raw`
    pass unchanged: the oracle's |ΔC| is already comparable across layers, and random scores are the
    uniform floor over *all* filters (normalising them per layer would favour wide layers).
    """
    return {name: dict(s) if name in keep_raw else normalize_per_layer(s, normalize) for name, s in raw.items()}


def check_amount(amount: float) -> float:
    """`amount` as a float, or a ValueError: the fraction of all filters to remove, in [0, 1)."""
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0.0 <= amount < 1.0:
        raise ValueError(f"amount is the fraction of all filters to remove, in [0, 1); got {amount!r}")
    return float(amount)


def _check_scores(model: nn.Module, scores: Scores) -> dict[str, int]:
    widths = group_widths(model)
    if set(scores) != set(widths):
        raise ValueError(f"scores cover {sorted(scores)}, but the prunable convs are {sorted(widths)}; "
                         "score the same (unpruned) model you prune")
    for name, n in widths.items():
        if len(scores[name]) != n:
            raise ValueError(f"{name} has {n} filters but {len(scores[name])} scores; "
                             "score the same (unpruned) model you prune")
    return widths


def prune_copy(model: nn.Module, scores: Scores, amount: float, *, min_keep: int | Mapping[str, int] = 1) -> tuple[nn.Module, Plan]:
    """Remove the globally lowest-scored `amount` of all filters from a deep copy of `model`.

    Args:
        scores: ``{conv: (C,) scores}`` for every prunable conv, higher = more important,
            already comparable across layers (see `selection_scores`).
        amount: fraction of all prunable filters to remove, in [0, 1) (rounded to a count).
        min_keep: no layer keeps fewer filters than this; a mapping gives each layer its floor
            (`plan.layer_floors`: a cap on the share of each layer removed).

    Returns:
        ``(pruned copy, plan)``; `model` is left unchanged.
    """
    amount = check_amount(amount)
    _check_scores(model, scores)
    plan = plan_from_scores(scores, fraction=amount, min_keep=min_keep)
    return prune_filters(copy.deepcopy(model), plan), plan


def one_shot(
    model: nn.Module,
    scores: Scores,
    amount: float,
    loader: Iterable,
    *,
    input_shape: Sequence[int],
    criterion: str = "",
    min_keep: int | Mapping[str, int] = 1,
) -> OneShot:
    """Prune a copy of `model` at `amount` (`prune_copy`), then evaluate it on `loader` without fine-tuning.

    Args:
        loader: batches ``(inputs (N, C, H, W), targets (N,))`` to measure accuracy on.
        input_shape: one image's shape ``(C, H, W)``, for FLOPs per image.
        criterion: a label stored in the result.
    """
    pruned, plan = prune_copy(model, scores, amount, min_keep=min_keep)
    metrics = evaluate(pruned, loader, per_example=True)
    removed = {name: len(plan.get(name, [])) for name in scores}
    kept = group_widths(pruned)
    return OneShot(criterion=criterion, amount=float(amount), filters_removed=sum(removed.values()),
                   filters_total=sum(len(s) for s in scores.values()), accuracy=float(metrics["accuracy"]),
                   loss=float(metrics["loss"]), flops=count_flops(pruned, (1, *input_shape)),
                   params=count_parameters(pruned), removed=removed, kept=kept, correct=metrics["correct"])


def sweep(
    model: nn.Module,
    scores_by_criterion: Mapping[str, Scores],
    amounts: Sequence[float],
    loader: Iterable,
    *,
    input_shape: Sequence[int],
    min_keep: int | Mapping[str, int] = 1,
    progress: bool = False,
) -> pd.DataFrame:
    """`one_shot` for every criterion at every amount (amount 0, the unpruned model, is evaluated once).

    Returns:
        One row per (criterion, amount): ``criterion, amount, filters_removed, fraction_removed,
        accuracy`` (fraction), ``loss, mflops`` (per image), ``params``, and ``removed:<conv>`` counts.
        ``table.attrs["correct"]`` maps ``(criterion, amount)`` to the per-image correctness.
    """
    amounts = [check_amount(a) for a in amounts]
    loader = list(loader)  # read the data once, reuse it for every evaluation
    base = None
    rows, correct = [], {}
    bar = tqdm(total=len(amounts) * len(scores_by_criterion), desc="one-shot sweep", disable=not progress, leave=False)
    for criterion, scores in scores_by_criterion.items():
        for amount in amounts:
            if amount == 0 or round(amount * sum(len(s) for s in scores.values())) == 0:
                base = base or one_shot(model, scores, 0.0, loader, input_shape=input_shape, min_keep=min_keep)
                result = replace(base, criterion=criterion, amount=amount)
            else:
                result = one_shot(model, scores, amount, loader, input_shape=input_shape, criterion=criterion,
                                  min_keep=min_keep)
            rows.append(_row(result))
            correct[criterion, amount] = result.correct
            bar.update()
    bar.close()
    table = pd.DataFrame(rows)
    table.attrs["correct"] = correct
    return table


def _row(r: OneShot) -> dict:
    return {"criterion": r.criterion, "amount": r.amount, "filters_removed": r.filters_removed,
            "fraction_removed": r.fraction_removed, "accuracy": r.accuracy, "loss": r.loss,
            "mflops": r.flops / 1e6, "params": r.params, **{f"removed:{n}": k for n, k in r.removed.items()}}


def removed_per_layer(scores_by_criterion: Mapping[str, Scores], amount: float, *, min_keep: int | Mapping[str, int] = 1) -> pd.DataFrame:
    """How many filters each criterion would remove from each layer at `amount` (plans only, no evaluation).

    Returns:
        DataFrame indexed by conv (forward order): ``filters`` (the layer's width), then one column
        per criterion with the number of filters it removes there.
    """
    amount = check_amount(amount)
    if not scores_by_criterion:
        raise ValueError("scores_by_criterion is empty; pass {criterion: {conv: scores}}")
    first = next(iter(scores_by_criterion.values()))
    table = pd.DataFrame({"filters": {n: len(s) for n, s in first.items()}})
    for criterion, scores in scores_by_criterion.items():
        plan = plan_from_scores(scores, fraction=amount, min_keep=min_keep)
        table[criterion] = [len(plan.get(n, [])) for n in table.index]
    table.index.name = "layer"
    return table
