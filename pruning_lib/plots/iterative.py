"""Plots for Prune–Train–Repeat (notebook 03).  Each ``plot_*`` returns its Figure; ``draw_*`` draw on an axis.

X axes show the FLOPs left as a percentage of the unpruned model, decreasing to the right
(the order in which pruning proceeds).  Accuracies are fractions in the data, percent on the axes.
"""

from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from ..recover.history import layer_widths

__all__ = ["draw_recovery", "draw_sawtooth", "plot_accuracy_vs_flops", "plot_criteria", "plot_layer_heatmap",
           "plot_recovery", "plot_sawtooth"]


def _flops_left(history: pd.DataFrame) -> np.ndarray:
    return 100 * history["gflops"].to_numpy(float) / float(history["gflops"].iloc[0])


def draw_sawtooth(ax: Axes, history: pd.DataFrame, *, label: str | None = None, color=None,
                  n_images: int | None = None) -> Axes:
    """The sawtooth of one run: each prune drops accuracy (and FLOPs), each fine-tune lifts it back.

    The line visits, per iteration, the accuracy right after pruning (▼) and after fine-tuning (●).
    With `n_images` (the validation images), a band of ±1 standard error, sqrt(p(1 − p)/n), is drawn
    around the after-fine-tuning accuracy: differences inside it are noise.
    """
    x = _flops_left(history)
    before = 100 * history["accuracy_before_finetune"].to_numpy(float)
    after = 100 * history["accuracy_after_finetune"].to_numpy(float)
    xs, ys = [x[0]], [after[0]]
    for i in range(1, len(history)):
        xs += [x[i], x[i]]
        ys += [before[i], after[i]]
    line, = ax.plot(xs, ys, color=color, lw=1.2, alpha=0.8, label=label)
    color = line.get_color()
    ax.plot(x[1:], before[1:], "v", color=color, ms=5, mfc="white",
            label=None if label else "right after pruning")
    ax.plot(x, after, "o", color=color, ms=4, label=None if label else "after fine-tuning")
    if n_images:
        se = 100 * np.sqrt(after / 100 * (1 - after / 100) / n_images)
        ax.fill_between(x, after - se, after + se, color=color, alpha=0.15, lw=0, label="±1 standard error")
    if not ax.xaxis_inverted():
        ax.invert_xaxis()
    ax.set(xlabel="FLOPs left (% of the unpruned model)", ylabel="validation accuracy (%)")
    ax.grid(alpha=0.3)
    return ax


def plot_sawtooth(history: pd.DataFrame, title: str = "Prune–Train–Repeat", *, n_images: int | None = None) -> plt.Figure:
    """`draw_sawtooth` on its own figure, with the starting accuracy as a dashed line."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    draw_sawtooth(ax, history, n_images=n_images)
    ax.axhline(100 * history["accuracy_after_finetune"].iloc[0], color="gray", ls="--", lw=1, label="before pruning")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def plot_criteria(histories: Mapping[str, pd.DataFrame], title: str = "Criteria under the same schedule") -> plt.Figure:
    """Two panels, one line per criterion: accuracy right after each prune (the damage) and after fine-tuning."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True, sharey=True)
    for name, h in histories.items():
        x = _flops_left(h)
        axes[0].plot(x, 100 * h["accuracy_before_finetune"], marker="v", ms=4, label=name)
        axes[1].plot(x, 100 * h["accuracy_after_finetune"], marker="o", ms=4, label=name)
    axes[0].set_title("right after pruning (before fine-tuning)")
    axes[1].set_title("after fine-tuning")
    for ax in axes:
        ax.set(xlabel="FLOPs left (% of the unpruned model)", ylabel="validation accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].invert_xaxis()
    axes[1].legend(fontsize=8, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
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
    """Test accuracy (± 1 standard error) against MFLOPs per image, one point per network.

    `points` has one row per network with ``name``, ``mflops``, ``accuracy`` (a fraction) and ``n`` (test
    images); ``group`` (optional) gives points of one group one colour.
    """
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    groups = points["group"] if "group" in points else points["name"]
    colors = {g: f"C{i}" for i, g in enumerate(dict.fromkeys(groups))}
    for (_, r), g in zip(points.iterrows(), groups):
        se = 100 * np.sqrt(r["accuracy"] * (1 - r["accuracy"]) / r["n"])
        ax.errorbar(r["mflops"], 100 * r["accuracy"], yerr=se, fmt="o", capsize=3, color=colors[g])
        ax.annotate(r["name"], (r["mflops"], 100 * r["accuracy"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set(xlabel="MFLOPs per image (log scale)", ylabel="test accuracy (%), ± 1 standard error", title=title)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig
