"""Plots for Prune–Train–Repeat (notebook 03).  Each ``plot_*`` returns its Figure; ``draw_*`` draw on an axis.

The sawtooth's x axis is the iteration, each tick also giving the FLOPs left (% of the unpruned model); plots that
compare runs put the FLOPs left on the x axis, decreasing to the right (the order in which pruning proceeds), and
number each point with its iteration.  Accuracies are fractions in the data, percent on the axes.
"""

from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.transforms import Bbox

from ..recover.history import layer_widths
from . import layout

__all__ = ["draw_recovery", "draw_sawtooth", "plot_accuracy_vs_flops", "plot_criteria", "plot_layer_heatmap",
           "plot_recovery", "plot_sawtooth"]


def _flops_left(history: pd.DataFrame) -> np.ndarray:
    return 100 * history["gflops"].to_numpy(float) / float(history["gflops"].iloc[0])


def _iterations(history: pd.DataFrame) -> np.ndarray:
    return history["iteration"].to_numpy(int) if "iteration" in history else np.arange(len(history))


def _percent(value: float) -> str:
    return f"{value:.0f}%" if value >= 9.95 else f"{value:.1f}%"


#: what the sawtooth's markers mean, in its legend and in the panel titles of `plot_criteria`
PRUNED, TUNED = "▼ right after its prune", "● after its fine-tune"


def draw_sawtooth(ax: Axes, history: pd.DataFrame, *, label: str | None = None, color=None,
                  n_images: int | None = None, max_ticks: int = 12) -> Axes:
    """The sawtooth of one run against the iteration: each prune drops accuracy (and FLOPs), each fine-tune lifts it.

    Iteration i's ▼ is the accuracy right after its prune and its ● the accuracy after its fine-tune (iteration 0:
    the unpruned network); the legend says so.  Each x tick names the iteration and, under it, the FLOPs left
    (% of the unpruned model) of the run drawn last; at most `max_ticks` are labelled.  With `n_images` (the
    validation images), a band of ±1 standard error, sqrt(p(1 − p)/n), is drawn around the after-fine-tuning
    accuracy: differences inside it are noise.
    """
    it = _iterations(history)
    flops = _flops_left(history)
    before = 100 * history["accuracy_before_finetune"].to_numpy(float)
    after = 100 * history["accuracy_after_finetune"].to_numpy(float)
    xs, ys = [it[0]], [after[0]]
    for i in range(1, len(history)):
        xs += [it[i], it[i]]
        ys += [before[i], after[i]]
    line, = ax.plot(xs, ys, color=color, lw=1.2, alpha=0.8, label=label)
    color = line.get_color()
    ax.plot(it[1:], before[1:], "v", color=color, ms=5, mfc="white", label=None if label else PRUNED)
    ax.plot(it, after, "o", color=color, ms=4, label=None if label else TUNED)
    if label:                                  # several runs: the markers explained once, in grey
        known = {h.get_label() for h in ax.get_lines()}
        for marker, text, face in (("v", PRUNED, "white"), ("o", TUNED, "0.4")):
            if text not in known:
                ax.plot([], [], marker, color="0.4", mfc=face, ms=5, ls="none", label=text)
    if n_images:
        se = 100 * np.sqrt(after / 100 * (1 - after / 100) / n_images)
        ax.fill_between(it, after - se, after + se, color=color, alpha=0.15, lw=0, label="±1 standard error")
    step = max(1, -(-len(it) // max_ticks))
    shown = list(range(0, len(it), step))
    ax.set_xticks(it[shown], [f"{it[k]}\n{_percent(flops[k])}" for k in shown], fontsize=8)
    ax.set_xlim(it[0] - 0.4, it[-1] + 0.4)
    ax.set(xlabel="iteration (under it: FLOPs left, % of the unpruned model)", ylabel="validation accuracy (%)")
    ax.grid(alpha=0.3)
    return ax


def plot_sawtooth(history: pd.DataFrame, title: str = "Prune–Train–Repeat", *, n_images: int | None = None) -> plt.Figure:
    """`draw_sawtooth` on its own figure, with the starting accuracy as a dashed line."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    draw_sawtooth(ax, history, n_images=n_images)
    ax.axhline(100 * history["accuracy_after_finetune"].iloc[0], color="gray", ls="--", lw=1, label="before pruning")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_criteria(histories: Mapping[str, pd.DataFrame], title: str = "Criteria under the same schedule") -> plt.Figure:
    """Two panels, one line per criterion against the FLOPs left: accuracy right after each prune (▼, the damage)
    and after its fine-tune (●).  Each marker is numbered with its iteration (`layout.place_labels`)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharex=True, sharey=True)
    columns = ("accuracy_before_finetune", "accuracy_after_finetune")
    for k, (name, h) in enumerate(histories.items()):
        x = _flops_left(h)
        axes[0].plot(x[1:], 100 * h[columns[0]].iloc[1:], marker="v", ms=5, mfc="white", color=f"C{k}", label=name)
        axes[1].plot(x, 100 * h[columns[1]], marker="o", ms=4, color=f"C{k}", label=name)
    axes[0].set_title(f"{PRUNED} (before fine-tuning)", fontsize=11)
    axes[1].set_title(TUNED, fontsize=11)
    for ax in axes:
        ax.set(xlabel="FLOPs left (% of the unpruned model)", ylabel="validation accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].invert_xaxis()
    axes[1].legend(title="criterion (numbers: iterations)", fontsize=8, title_fontsize=8, loc="lower left")
    low, high = axes[0].get_ylim()
    axes[0].set_ylim(low - 0.06 * (high - low), high + 0.06 * (high - low))    # room for the numbers
    fig.suptitle(title)
    fig.tight_layout()                              # the layout first: the numbers are placed in its pixels
    for ax, column in zip(axes, columns):
        first = 1 if column == columns[0] else 0
        for k, (name, h) in enumerate(histories.items()):
            layout.place_labels(ax, _flops_left(h)[first:], 100 * h[column].to_numpy(float)[first:],
                                [str(i) for i in _iterations(h)[first:]], colors=[f"C{k}"] * (len(h) - first),
                                fontsize=7, marker_radius=3)
    return fig


def plot_layer_heatmap(histories: Mapping[str, pd.DataFrame], title: str = "Filters left per layer") -> plt.Figure:
    """A heat map per run: layers (rows, input to output) × iterations (columns), % of filters left."""
    n = len(histories)
    fig, axes = plt.subplots(1, n, figsize=(2.2 + 3.8 * n, 3.8), squeeze=False, layout="constrained")
    image = None
    for ax, (name, h) in zip(axes[0], histories.items()):
        rel = layer_widths(h, relative=True)
        counts = layer_widths(h, relative=False)
        image = ax.imshow(100 * rel.to_numpy(float), aspect="auto", cmap="viridis", vmin=0, vmax=100)
        for (i, j), v in np.ndenumerate(counts.to_numpy()):
            ax.text(j, i, str(int(v)), ha="center", va="center", fontsize=8,
                    color="white" if rel.iloc[i, j] < 0.5 else "black")
        ax.set_xticks(range(rel.shape[1]), [str(c) for c in rel.columns])
        labels = [f"{r} ({int(counts.iloc[i, 0])})" for i, r in enumerate(rel.index)]
        ax.set_yticks(range(rel.shape[0]), labels if ax is axes[0][0] else [""] * len(labels))
        ax.set(xlabel="iteration", title=name)
    axes[0][0].set_ylabel("conv layer (filters at start)")
    fig.colorbar(image, ax=list(axes[0]), label="filters left (%)", shrink=0.9)
    fig.suptitle(title)
    return fig


def draw_recovery(ax: Axes, history: pd.DataFrame, *, label: str | None = None, color=None) -> Axes:
    """Accuracy during a one-shot prune and fine-tune: a dashed line before pruning, then step by step.

    `history` is `recovery.prune_and_finetune`'s: rows with ``phase`` "baseline", "pruned", "fine-tune".
    """
    base = history[history["phase"] == "baseline"]
    curve = history[history["phase"] != "baseline"]
    line, = ax.plot(curve["step"], 100 * curve["accuracy"], marker="o", ms=3, color=color,
                    label=label or "after pruning, while fine-tuning")
    if len(base):
        first = "before pruning" not in [h.get_label() for h in ax.get_lines()]
        ax.axhline(100 * base["accuracy"].iloc[0], color="gray", ls="--", lw=1,
                   label="before pruning" if first else None)
    ax.set(xlabel="fine-tuning step (batches)", ylabel="validation accuracy (%)")
    ax.grid(alpha=0.3)
    return ax


def plot_recovery(histories: Mapping[str, pd.DataFrame] | pd.DataFrame, title: str = "Prune, then fine-tune") -> plt.Figure:
    """`draw_recovery` for one history or several (a legend entry per key)."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    if isinstance(histories, pd.DataFrame):
        draw_recovery(ax, histories)
    else:
        for name, h in histories.items():
            draw_recovery(ax, h, label=name)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_accuracy_vs_flops(points: pd.DataFrame, *, title: str = "Final accuracy against cost") -> plt.Figure:
    """Test accuracy (± 1 standard error) against MFLOPs per image, one point per network, each named beside it.

    `points` has one row per network with ``name``, ``mflops``, ``accuracy`` (a fraction) and ``n`` (test
    images); ``group`` (optional) gives points of one group one colour and a legend entry (outside the axes).
    The x axis is logarithmic with plain ticks (2, 5, 10 MFLOPs); the names are placed where they overlap
    neither each other nor a point or an error bar (`layout.place_labels`).
    """
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    grouped = "group" in points
    groups = list(points["group"] if grouped else points["name"])
    colors = {g: f"C{i}" for i, g in enumerate(dict.fromkeys(groups))}
    mflops = points["mflops"].to_numpy(float)
    acc = 100 * points["accuracy"].to_numpy(float)
    se = 100 * np.sqrt(points["accuracy"].to_numpy(float) * (1 - points["accuracy"].to_numpy(float))
                       / points["n"].to_numpy(float))
    capsize = 3
    for i, g in enumerate(groups):
        ax.errorbar(mflops[i], acc[i], yerr=se[i], fmt="o", capsize=capsize, color=colors[g],
                    label=g if grouped and g not in groups[:i] else None)
    ax.set_xscale("log")
    span = mflops.max() / mflops.min()
    pad = max(span ** 0.12, 1.25)                   # room for the names at both ends
    ax.set_xlim(mflops.min() / pad, mflops.max() * pad)
    low, high = float((acc - se).min()), float((acc + se).max())
    ax.set_ylim(low - 0.12 * (high - low) - 0.1, high + 0.12 * (high - low) + 0.1)
    layout.readable_log_axis(ax.xaxis)
    ax.set(xlabel="cost: MFLOPs per image (log scale)", ylabel="test accuracy (%), ± 1 standard error", title=title)
    ax.grid(alpha=0.3, which="major")
    ax.grid(alpha=0.12, which="minor")
    if grouped:
        ax.legend(title="network", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1),
                  borderaxespad=0)
    fig.tight_layout()                              # the layout first: the names are placed in its pixels
    cap = capsize * fig.dpi / 72
    bars = [Bbox([ax.transData.transform((m, a - s)) - (cap, 0), ax.transData.transform((m, a + s)) + (cap, 0)])
            for m, a, s in zip(mflops, acc, se)]
    layout.place_labels(ax, mflops, acc, list(points["name"]), avoid=bars, marker_radius=4)
    return fig
