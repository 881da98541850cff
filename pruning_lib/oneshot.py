"""One-shot pruning: remove a fraction of all filters at once, with no fine-tuning, and measure the damage.

Notebook 02 uses this to compare ranking criteria by what they *do*, not only by how they
correlate with the oracle (Molchanov et al. 2017, Table 1):

1. `selection_scores`: the scores a criterion prunes with (L2-normalised per layer, Eq. 9;
   the oracle's |ΔC| stays raw: it is already in loss units, comparable across layers);
2. `prune_copy`: the globally lowest-scored filters removed from a *copy* of the model by real
   surgery (`surgery.plan_from_scores` + `surgery.prune_filters`): the same for every criterion;
3. `one_shot`: that copy's accuracy, FLOPs, parameters and filters removed per layer (`OneShot`);
4. `sweep`: `one_shot` over several amounts and criteria, as a DataFrame;
5. `ranking_report` / `write_ranking_json`: ``reports/ranking.json``;
6. `one_shot_widget`: a slider (amount) and a dropdown (criterion) wired to `one_shot`.

Nothing here changes the model it is given.
"""

from __future__ import annotations

import copy
import html
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pandas as pd
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from . import bench, train
from .criteria import normalize_per_layer
from .paths import reports_dir
from .surgery import Plan, filters_per_layer, find_couplings, plan_from_scores, prune_filters

Scores = Mapping[str, torch.Tensor]

# Molchanov et al. 2017, Table 1 (VGG16 fine-tuned on Birds-200): Spearman ρ against the oracle.
# Keys are our criterion names; "l2" stands for the paper's "weight" criterion (mean squared weight,
# which ranks a layer's filters exactly as our L2 norm does).  Mutual information is not implemented here.
PAPER_ALL_LAYERS_L2 = {"taylor": 0.73, "std_activation": 0.66, "mean_activation": 0.64,
                       "mutual_information": 0.47, "l2": 0.33, "random": 0.0}
PAPER_PER_LAYER = {"taylor": 0.73, "l2": 0.27}
PAPER_ALL_LAYERS_RAW = {"taylor": 0.14}

REPORT_KEYS = ("spearman_all_l2", "spearman_all_raw", "spearman_per_layer_mean", "amounts", "accuracy")


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

    @property
    def fraction_removed(self) -> float:
        return self.filters_removed / self.filters_total


# ---------------------------------------------------------------- scores -> pruned copy
def selection_scores(
    raw: Mapping[str, Scores], *, normalize: str | None = "l2", keep_raw: Sequence[str] = ("oracle",)
) -> dict[str, dict[str, torch.Tensor]]:
    """The scores each criterion prunes with: ``{criterion: {conv: (C,) scores}}``.

    Every criterion is normalised per layer (Eq. 9, ``normalize="l2"``) so one global threshold can
    compare layers, as in the paper and in `iterative.prune_train_repeat`; the names in `keep_raw`
    (the oracle's |ΔC|, already comparable across layers) are passed through unchanged.
    """
    return {name: dict(s) if name in keep_raw else normalize_per_layer(s, normalize) for name, s in raw.items()}


def _check_amount(amount: float) -> float:
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0.0 <= amount < 1.0:
        raise ValueError(f"amount is the fraction of all filters to remove, in [0, 1); got {amount!r}")
    return float(amount)


def _check_scores(model: nn.Module, scores: Scores) -> dict[str, int]:
    widths = filters_per_layer(model)
    if set(scores) != set(widths):
        raise ValueError(f"scores cover {sorted(scores)}, but the prunable convs are {sorted(widths)}; "
                         "score the same (unpruned) model you prune")
    for name, n in widths.items():
        if len(scores[name]) != n:
            raise ValueError(f"{name} has {n} filters but {len(scores[name])} scores; "
                             "score the same (unpruned) model you prune")
    return widths


def prune_copy(model: nn.Module, scores: Scores, amount: float, *, min_keep: int = 1) -> tuple[nn.Module, Plan]:
    """Remove the globally lowest-scored `amount` of all filters from a deep copy of `model`.

    Args:
        scores: ``{conv: (C,) scores}`` for every prunable conv, higher = more important,
            already comparable across layers (see `selection_scores`).
        amount: fraction of all prunable filters to remove, in [0, 1) (rounded to a count).
        min_keep: no layer keeps fewer filters than this.

    Returns:
        ``(pruned copy, plan)``; `model` is left unchanged.
    """
    amount = _check_amount(amount)
    _check_scores(model, scores)
    plan = plan_from_scores(scores, fraction=amount, min_keep=min_keep)
    return prune_filters(copy.deepcopy(model), plan), plan


def masked_forward(model: nn.Module, plan: Mapping[str, Sequence[int]], x: torch.Tensor) -> torch.Tensor:
    """The *unpruned* `model`'s output on `x` with the planned channels of each conv's post-activation map
    set to zero (no surgery): what `prune_copy`'s pruned model must compute exactly."""
    couplings = find_couplings(model)
    modules = dict(model.named_modules())

    def zero(channels: list[int]):
        def hook(module, inputs, output):
            out = output.clone()
            out[:, channels] = 0
            return out
        return hook

    hooks = [modules[couplings[conv].capture].register_forward_hook(zero(list(idx)))
             for conv, idx in plan.items() if len(idx)]
    try:
        with torch.no_grad():
            return model(x)
    finally:
        for h in hooks:
            h.remove()


def one_shot(
    model: nn.Module,
    scores: Scores,
    amount: float,
    loader: Iterable,
    *,
    input_shape: Sequence[int],
    criterion: str = "",
    min_keep: int = 1,
) -> OneShot:
    """Prune a copy of `model` at `amount` (`prune_copy`), then evaluate it on `loader` without fine-tuning.

    Args:
        loader: batches ``(inputs (N, C, H, W), targets (N,))`` to measure accuracy on.
        input_shape: one image's shape ``(C, H, W)``, for FLOPs per image.
        criterion: a label stored in the result.
    """
    pruned, plan = prune_copy(model, scores, amount, min_keep=min_keep)
    metrics = train.evaluate(pruned, loader)
    removed = {name: len(plan.get(name, [])) for name in scores}
    kept = filters_per_layer(pruned)
    return OneShot(criterion=criterion, amount=float(amount), filters_removed=sum(removed.values()),
                   filters_total=sum(len(s) for s in scores.values()), accuracy=float(metrics["accuracy"]),
                   loss=float(metrics["loss"]), flops=bench.count_flops(pruned, (1, *input_shape)),
                   params=bench.count_parameters(pruned), removed=removed, kept=kept)


def sweep(
    model: nn.Module,
    scores_by_criterion: Mapping[str, Scores],
    amounts: Sequence[float],
    loader: Iterable,
    *,
    input_shape: Sequence[int],
    min_keep: int = 1,
    progress: bool = False,
) -> pd.DataFrame:
    """`one_shot` for every criterion at every amount (amount 0, the unpruned model, is evaluated once).

    Returns:
        One row per (criterion, amount): ``criterion, amount, filters_removed, fraction_removed,
        accuracy`` (fraction), ``loss, mflops`` (per image), ``params``, and ``removed:<conv>`` counts.
    """
    amounts = [_check_amount(a) for a in amounts]
    loader = list(loader)  # read the data once, reuse it for every evaluation
    base = None
    rows = []
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
            bar.update()
    bar.close()
    return pd.DataFrame(rows)


def _row(r: OneShot) -> dict:
    return {"criterion": r.criterion, "amount": r.amount, "filters_removed": r.filters_removed,
            "fraction_removed": r.fraction_removed, "accuracy": r.accuracy, "loss": r.loss,
            "mflops": r.flops / 1e6, "params": r.params, **{f"removed:{n}": k for n, k in r.removed.items()}}


def removed_per_layer(scores_by_criterion: Mapping[str, Scores], amount: float, *, min_keep: int = 1) -> pd.DataFrame:
    """How many filters each criterion would remove from each layer at `amount` (plans only, no evaluation).

    Returns:
        DataFrame indexed by conv (forward order): ``filters`` (the layer's width), then one column
        per criterion with the number of filters it removes there.
    """
    amount = _check_amount(amount)
    if not scores_by_criterion:
        raise ValueError("scores_by_criterion is empty; pass {criterion: {conv: scores}}")
    first = next(iter(scores_by_criterion.values()))
    table = pd.DataFrame({"filters": {n: len(s) for n, s in first.items()}})
    for criterion, scores in scores_by_criterion.items():
        plan = plan_from_scores(scores, fraction=amount, min_keep=min_keep)
        table[criterion] = [len(plan.get(n, [])) for n in table.index]
    table.index.name = "layer"
    return table


# ---------------------------------------------------------------- Table 1 beside the paper
def compare_with_paper(table: pd.DataFrame) -> pd.DataFrame:
    """Our Spearman summary (`criteria.spearman_table`) beside the paper's Table 1 numbers.

    Rows: our criteria plus the paper's mutual information (not implemented: NaN in our columns).
    Columns: ``ours: all layers (L2)``, ``paper: all layers (L2)``, ``ours: per layer (mean)``,
    ``paper: per layer``, ``ours: all layers (raw)``, ``paper: all layers (raw)``; NaN = not reported.
    """
    rows = list(table.index) + [c for c in PAPER_ALL_LAYERS_L2 if c not in table.index]
    nan = float("nan")

    def ours(col: str, c: str) -> float:
        return float(table.loc[c, col]) if c in table.index else nan

    return pd.DataFrame({
        "ours: all layers (L2)": [ours("all_layers_l2", c) for c in rows],
        "paper: all layers (L2)": [PAPER_ALL_LAYERS_L2.get(c, nan) for c in rows],
        "ours: per layer (mean)": [ours("per_layer_mean", c) for c in rows],
        "paper: per layer": [PAPER_PER_LAYER.get(c, nan) for c in rows],
        "ours: all layers (raw)": [ours("all_layers_raw", c) for c in rows],
        "paper: all layers (raw)": [PAPER_ALL_LAYERS_RAW.get(c, nan) for c in rows],
    }, index=pd.Index(rows, name="criterion"))


# ---------------------------------------------------------------- reports/ranking.json
def ranking_report(table: pd.DataFrame, sweep_table: pd.DataFrame) -> dict[str, dict]:
    """``{criterion: {spearman_all_l2, spearman_all_raw, spearman_per_layer_mean, amounts, accuracy}}``.

    Args:
        table: `criteria.spearman_table` (rows: criteria).
        sweep_table: `sweep` (amounts as fractions of all filters, accuracy as a fraction);
            criteria in it but not in `table` (e.g. the oracle) are left out.
    """
    missing = [c for c in table.index if c not in set(sweep_table["criterion"])]
    if missing:
        raise ValueError(f"the sweep has no rows for {missing}; sweep every criterion of the Spearman table")
    report = {}
    for criterion in table.index:
        part = sweep_table[sweep_table["criterion"] == criterion].sort_values("amount")
        report[criterion] = {
            "spearman_all_l2": float(table.loc[criterion, "all_layers_l2"]),
            "spearman_all_raw": float(table.loc[criterion, "all_layers_raw"]),
            "spearman_per_layer_mean": float(table.loc[criterion, "per_layer_mean"]),
            "amounts": [float(a) for a in part["amount"]],
            "accuracy": [float(a) for a in part["accuracy"]],
        }
    check_ranking_report(report)
    return report


def check_ranking_report(report: Mapping) -> None:
    """Raise ValueError naming the first entry of `report` that does not follow ranking.json's schema."""
    if not isinstance(report, Mapping) or not report:
        raise ValueError("ranking report must be a non-empty {criterion: {...}} mapping")
    for criterion, entry in report.items():
        if not isinstance(entry, Mapping) or set(entry) != set(REPORT_KEYS):
            got = sorted(entry) if isinstance(entry, Mapping) else type(entry).__name__
            raise ValueError(f"ranking report[{criterion!r}] must have exactly the keys {list(REPORT_KEYS)}; got {got}")
        for key in REPORT_KEYS[:3]:
            v = entry[key]
            if not isinstance(v, float) or not (math.isnan(v) or -1.0 - 1e-9 <= v <= 1.0 + 1e-9):
                raise ValueError(f"ranking report[{criterion!r}][{key!r}] must be a Spearman ρ in [-1, 1]; got {v!r}")
        amounts, accuracy = entry["amounts"], entry["accuracy"]
        if len(amounts) != len(accuracy) or not amounts:
            raise ValueError(f"ranking report[{criterion!r}]: 'amounts' and 'accuracy' must be non-empty lists "
                             f"of the same length; got {len(amounts)} and {len(accuracy)}")
        if any(not 0.0 <= x <= 1.0 for x in [*amounts, *accuracy]):
            raise ValueError(f"ranking report[{criterion!r}]: amounts and accuracy are fractions in [0, 1]")


def write_ranking_json(report: Mapping, path: str | Path | None = None) -> Path:
    """Check `report` (`check_ranking_report`) and write it as JSON (default: ``reports/ranking.json``)."""
    check_ranking_report(report)
    path = Path(path) if path is not None else reports_dir() / "ranking.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, allow_nan=True) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------- the widget
def one_shot_summary(result: OneShot, baseline: OneShot) -> str:
    """An HTML table: accuracy, FLOPs and parameters of `result` against the unpruned `baseline`."""
    def pct(a, b):
        return f"{100 * a / b:.0f}%" if b else "n/a"

    rows = [
        ("filters removed", f"{result.filters_removed} of {result.filters_total}",
         f"{100 * result.fraction_removed:.1f}%"),
        ("one-shot accuracy", f"{100 * result.accuracy:.1f}%",
         f"{100 * (result.accuracy - baseline.accuracy):+.1f} points vs {100 * baseline.accuracy:.1f}%"),
        ("MFLOPs per image", f"{result.flops / 1e6:.1f}", f"{pct(result.flops, baseline.flops)} of {baseline.flops / 1e6:.1f}"),
        ("parameters", f"{result.params:,}", f"{pct(result.params, baseline.params)} of {baseline.params:,}"),
    ]
    cells = "".join(f"<tr><td>{a}</td><td style='text-align:right'><b>{b}</b></td><td>{c}</td></tr>"
                    for a, b, c in rows)
    return (f"<b>{result.criterion or 'scores'}</b>, amount {result.amount:.2f} (no fine-tuning)"
            f"<table>{cells}</table>")


def one_shot_widget(
    model: nn.Module,
    scores_by_criterion: Mapping[str, Scores],
    loader: Iterable,
    *,
    input_shape: Sequence[int],
    criterion: str | None = None,
    amount: float = 0.5,
    max_amount: float = 0.9,
    step: float = 0.05,
    min_keep: int = 1,
):
    """A slider (fraction of filters removed) and a dropdown (criterion) wired to `one_shot`.

    Every change prunes a fresh copy of `model` by real surgery and evaluates it on `loader`
    (results are cached per setting); the scores are the ones given, computed once up front.
    Shows the numbers (`one_shot_summary`) and a bar chart of filters kept / removed per layer.
    The returned ``ipywidgets.VBox`` has attributes ``slider``, ``dropdown``, ``summary`` (HTML),
    ``chart`` (Output) and ``results`` ({(criterion, amount): OneShot}); it is drawn once at build time.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    from .plots_ranking import plot_one_shot

    names = list(scores_by_criterion)
    criterion = criterion or names[0]
    if criterion not in scores_by_criterion:
        raise ValueError(f"criterion {criterion!r} has no scores; choose one of {names}")
    _check_amount(amount)
    _check_amount(max_amount)
    loader = list(loader)
    baseline = one_shot(model, scores_by_criterion[criterion], 0.0, loader, input_shape=input_shape,
                        criterion="unpruned", min_keep=min_keep)
    results: dict[tuple[str, float], OneShot] = {}
    slider = widgets.FloatSlider(value=amount, min=0.0, max=max_amount, step=step, description="amount",
                                 readout_format=".2f", continuous_update=False)
    dropdown = widgets.Dropdown(options=names, value=criterion, description="criterion")
    summary = widgets.HTML()
    chart = widgets.Output()

    def update(change=None) -> None:
        key = (dropdown.value, round(float(slider.value), 6))
        if key not in results:
            try:
                results[key] = one_shot(model, scores_by_criterion[key[0]], key[1], loader,
                                        input_shape=input_shape, criterion=key[0], min_keep=min_keep)
            except ValueError as e:  # e.g. more filters than the per-layer floor allows
                summary.value = f"<b>cannot prune at amount {key[1]:.2f}</b>: {html.escape(str(e))}"
                chart.clear_output()
                return
        summary.value = one_shot_summary(results[key], baseline)
        with chart:
            chart.clear_output(wait=True)
            fig = plot_one_shot(results[key])
            display(fig)
            plt.close(fig)

    slider.observe(update, names="value")
    dropdown.observe(update, names="value")
    update()
    box = widgets.VBox([widgets.HBox([dropdown, slider]), summary, chart])
    box.slider, box.dropdown, box.summary, box.chart, box.results = slider, dropdown, summary, chart, results
    return box
