"""Plots for notebook 02 (ranking criteria); each returns its matplotlib Figure."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..rank.criteria import Scores
from ..recover.oneshot import OneShot
from . import layout
from .groups import short_name


# one fixed colour per criterion, so every figure of the notebook agrees
COLORS = {"taylor": "tab:blue", "std_activation": "tab:orange", "mean_activation": "tab:green",
          "apoz": "tab:purple", "l1": "tab:brown", "l2": "tab:pink", "random": "tab:gray", "oracle": "black"}


def _color(name: str, i: int) -> str:
    return COLORS.get(name, f"C{i % 10}")


def plot_score_distributions(panels: Mapping[str, Scores], *, log: bool = True, seed: int = 0) -> plt.Figure:
    """One panel per entry of `panels` (``{title: {conv: (C,) scores}}``): a box per layer (forward order)
    with every filter's score drawn as a jittered dot; log y axis by default (zeros are not drawn)."""
    gen = np.random.default_rng(seed)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.8), squeeze=False)
    for ax, (title, scores) in zip(axes[0], panels.items()):
        names = list(scores)
        values = [scores[n].double().numpy() for n in names]
        if log:
            values = [v[v > 0] for v in values]
        ax.boxplot(values, showfliers=False, widths=0.6)
        for i, v in enumerate(values, start=1):
            ax.scatter(i + gen.uniform(-0.22, 0.22, len(v)), v, s=5, alpha=0.4, color="tab:blue",
                       label="one filter" if i == 1 else None)
        ax.set_xticks(range(1, len(names) + 1), [f"{n.split('.')[-1]}\n({len(scores[n])})" for n in names],
                      fontsize=7)
        ax.set(title=title, xlabel="layer: features.<i> (filters)", ylabel="score" + (" (log)" if log else ""),
               yscale="log" if log else "linear")
    axes[0][0].legend(loc="best", fontsize=7)
    fig.tight_layout()
    return fig


#: the words of `plot_criteria_vs_oracle` for what each colour is: a VGG's conv layer or a ResNet's channel group
UNITS = {"layer": {"dot": "filter", "oracle": "the oracle", "legend": "layer"},
         "group": {"dot": "channel of a group", "oracle": "the group oracle", "legend": "channel group"}}


def plot_criteria_vs_oracle(scores_by_criterion: Mapping[str, Scores], oracle: Scores,
                            criteria: Sequence[str] = ("taylor", "l2"), *, floor: float = 1e-6,
                            unit: str = "layer") -> plt.Figure:
    """Scatter of each criterion's (given, e.g. L2-normalised) score against the oracle's |ΔC|, log-log,
    one colour per layer (``unit="layer"``, a VGG's filters) or per channel group (``unit="group"``, a ResNet's
    channels, each scored as a whole: the wording follows).  Values below `floor` are drawn at `floor` (dead
    filters have |ΔC| = 0).  The legend stands right of the panels, where it hides no dot."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {sorted(UNITS)}, got {unit!r}")
    words = UNITS[unit]
    layers = list(oracle)
    fig, axes = plt.subplots(1, len(criteria), figsize=(4.6 * len(criteria) + 1.8, 4.2), squeeze=False)
    for ax, criterion in zip(axes[0], criteria):
        for i, n in enumerate(layers):
            ax.scatter(oracle[n].double().clamp_min(floor).numpy(),
                       scores_by_criterion[criterion][n].double().clamp_min(floor).numpy(),
                       s=8, alpha=0.6, color=plt.cm.viridis(i / max(len(layers) - 1, 1)),
                       label=short_name(n) if unit == "group" else n)
        ax.set(xscale="log", yscale="log", title=criterion,
               xlabel=f"{words['oracle']}: |ΔC| (change of the cross-entropy, log)",
               ylabel=f"{criterion} score, L2-normalised per {unit} (log)")
        for axis in (ax.xaxis, ax.yaxis):
            layout.readable_log_axis(axis)
    axes[0][-1].legend(title=words["legend"], fontsize=7, title_fontsize=8, markerscale=2, loc="upper left",
                       bbox_to_anchor=(1.02, 1), borderaxespad=0)
    fig.suptitle(f"Each dot is one {words['dot']}: criterion against {words['oracle']}")
    fig.tight_layout()
    return fig


def plot_removed_per_layer(table: pd.DataFrame, amount: float) -> plt.Figure:
    """Grouped bars: filters each criterion removes from each layer (`oneshot.removed_per_layer`),
    with each layer's width as an outline."""
    criteria = [c for c in table.columns if c != "filters"]
    x = np.arange(len(table))
    width = 0.8 / max(len(criteria), 1)
    fig, ax = plt.subplots(figsize=(10, 3.8))
    ax.bar(x, table["filters"], width=0.9, facecolor="none", edgecolor="black", linewidth=0.8,
           label="filters in the layer")
    for i, c in enumerate(criteria):
        ax.bar(x - 0.4 + width * (i + 0.5), table[c], width=width, color=_color(c, i), label=c)
    ax.set_xticks(x, table.index, fontsize=8)
    ax.set(title=f"Filters removed per layer when {100 * amount:.0f}% of all filters go (one shot)",
           xlabel="layer (forward order)", ylabel="filters removed")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    return fig


def plot_sweep(sweep_table: pd.DataFrame, *, title: str = "One-shot pruning (no fine-tuning)",
               chance: float | None = 0.5, ylabel: str = "test accuracy (%)") -> plt.Figure:
    """Accuracy (%) against the fraction of filters removed (%), one line per criterion
    (`oneshot.sweep`); random and the oracle dashed; `chance` (a fraction) as a grey line."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    if chance is not None:
        ax.axhline(100 * chance, color="gray", lw=1, ls=":", label=f"chance ({100 * chance:.0f}%)")
    for i, (criterion, part) in enumerate(sweep_table.groupby("criterion", sort=False)):
        part = part.sort_values("fraction_removed")
        style = "--" if criterion in ("random", "oracle") else "-"
        ax.plot(100 * part["fraction_removed"], 100 * part["accuracy"], style, marker=".",
                color=_color(criterion, i), label=criterion, linewidth=2 if criterion == "taylor" else 1.3)
    ax.set(title=title, xlabel="filters removed (% of all conv filters)", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_one_shot(result: OneShot) -> plt.Figure:
    """Filters kept and removed in each layer by one `oneshot.one_shot` result (stacked bars)."""
    names = list(result.removed)
    labels = [short_name(n) if n.count(".") > 1 else n for n in names]     # ResNet groups: "4.0.conv1"
    kept = [result.kept[n] for n in names]
    removed = [result.removed[n] for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.2 if max(map(len, labels)) > 10 else 2.8))
    ax.bar(labels, kept, color="tab:blue", label="kept")
    ax.bar(labels, removed, bottom=kept, color="tab:red", alpha=0.6, label="removed")
    for i, r in enumerate(removed):
        if r:
            ax.text(i, kept[i] + r, str(r), ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 1.15 * max(k + r for k, r in zip(kept, removed)))
    ax.set(title=f"{result.criterion}: {result.filters_removed} filters removed, "
                 f"accuracy {100 * result.accuracy:.1f}%", xlabel="layer (or channel group)", ylabel="filters")
    ax.tick_params(axis="x", labelsize=8, rotation=30 if max(map(len, labels)) > 10 else 0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
