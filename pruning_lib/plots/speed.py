"""Plots for speed and size (notebook 04).  Each ``plot_*`` takes the DataFrames of :mod:`pruning_lib.speed`
and returns its Figure."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

_FORM_STYLE = {"eager": dict(marker="o", ls="--", mfc="white"), "deploy": dict(marker="o", ls="-"),
               "fold_bn": dict(marker="s", ls=":"), "channels_last": dict(marker="^", ls="-.")}


def plot_speedup_vs_flops(sweep: pd.DataFrame, batches: pd.DataFrame | None = None, *,
                          target: float = 0.8) -> Figure:
    """Left: measured speedup against FLOPs reduction, one point per iteration of notebook 03 (per form
    and criterion), with the ideal ``speedup = FLOPs ratio`` and the ``target x`` line.  Right (if
    `batches`): speedup of each pruned model against the batch size, with its FLOPs ratio dashed."""
    fig, axes = plt.subplots(1, 2 if batches is not None else 1, figsize=(12 if batches is not None else 6.5, 4.3),
                             squeeze=False)
    ax = axes[0, 0]
    colors = {}
    for (form, criterion), df in sweep.groupby(["form", "criterion"], sort=False):
        df = df.sort_values("flops_ratio")
        line, = ax.plot(df["flops_ratio"], df["speedup"], color=colors.get(criterion), ms=5,
                        label=f"{criterion}, {form}", **_FORM_STYLE.get(form, {}))
        colors[criterion] = line.get_color()
    top = float(max(sweep["flops_ratio"].max(), sweep["speedup"].max())) * 1.05
    xs = np.linspace(1, top, 50)
    ax.plot(xs, xs, color="gray", lw=1, label="speedup = FLOPs ratio")
    ax.plot(xs, target * xs, color="gray", lw=1, ls=":", label=f"{target:g} x FLOPs ratio (target)")
    batch = int(sweep["batch"].iloc[0])
    ax.set(xlabel="FLOPs reduction (x fewer FLOPs than the dense model)", ylabel="measured speedup (x faster)",
           title=f"Every iteration of notebook 03, batch {batch}", xlim=(0.9, top), ylim=(0.5, top))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    if batches is not None:
        ax = axes[0, 1]
        pruned = batches[batches["speedup_per_flops"].notna() & (batches["flops_ratio"] > 1)]
        for (form, model), df in pruned.groupby(["form", "model"], sort=False):
            df = df.sort_values("batch")
            line, = ax.plot(df["batch"], df["speedup"], color=colors.get(model), ms=5, label=f"{model}, {form}",
                            **_FORM_STYLE.get(form, {}))
            colors.setdefault(model, line.get_color())
        for model, df in pruned.groupby("model", sort=False):
            ax.axhline(float(df["flops_ratio"].iloc[0]), color=colors[model], lw=1, ls=(0, (6, 4)), alpha=0.7,
                       label=f"{model}: FLOPs ratio")
        ax.set_xscale("log", base=2)
        ax.set(xlabel="batch size (images per forward pass)", ylabel="measured speedup (x faster)",
               title="The final pruned models, by batch size")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_time_by_type(by_type: Mapping[str, pd.Series], *, title: str = "Where the time goes") -> Figure:
    """Stacked horizontal bars: milliseconds per layer type for each labelled run (e.g. "dense, eager"); the
    legend stands right of the axes, so it hides no bar whatever the runs' times."""
    table = pd.DataFrame(by_type).fillna(0.0).T
    order = [c for c in ("Conv2d", "BatchNorm2d", "MaxPool2d", "ReLU", "Linear", "AdaptiveAvgPool2d",
                         "Identity", "(outside modules)") if c in table.columns]
    table = table[order + [c for c in table.columns if c not in order]]
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(table) + 1.6))
    left = np.zeros(len(table))
    for col in table.columns:
        ax.barh(table.index, table[col], left=left, label=col)
        left += table[col].to_numpy()
    for y, total in enumerate(left):
        ax.text(total, y, f" {total:.1f} ms", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="time per forward pass of the batch (ms), summed by layer type", title=title,
           xlim=(0, left.max() * 1.15))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)   # off the bars
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def plot_layer_shares(tables: Mapping[str, pd.DataFrame], *, title: str = "Share of FLOPs vs share of time") -> Figure:
    """Per layer: % of FLOPs (grey) and % of measured time in each labelled run (from `per_layer_table`).
    Layers with no FLOPs and little time are drawn too: that is where FLOPs miss the cost."""
    first = next(iter(tables.values()))
    names = list(first["module"])
    y = np.arange(len(names))
    h = 0.8 / (len(tables) + 1)
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(names) + 1.5))
    ax.barh(y, first["% FLOPs"], height=h, color="0.6", label="% of FLOPs")
    for i, (label, t) in enumerate(tables.items(), start=1):
        share = t.set_index("module")["% time"].reindex(names).fillna(0)
        ax.barh(y + i * h, share, height=h, label=f"% of time, {label}")
    ax.set_yticks(y + h * len(tables) / 2, [f"{n} ({t})" for n, t in zip(names, first["type"])], fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="share of the whole forward pass (%)", title=title)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def plot_vgg16_shares(per_layer: pd.DataFrame) -> Figure:
    """VGG16 per layer: % of parameters and % of FLOPs (from ``measure.flops_per_layer``)."""
    df = per_layer.copy()
    x = np.arange(len(df))
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.bar(x - 0.2, 100 * df["params"] / df["params"].sum(), width=0.4, label="% of parameters")
    ax.bar(x + 0.2, 100 * df["flops"] / df["flops"].sum(), width=0.4, label="% of FLOPs")
    ax.set_xticks(x, [f"{m}\n{t}" for m, t in zip(df["module"], df["type"])], fontsize=6.5, rotation=60)
    ax.set(ylabel="share of the whole network (%)", title="VGG16 (2-class head): where the weights and the FLOPs are")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def plot_predicted_vs_measured(check: pd.DataFrame, *, title: str = "The latency model against the clock") -> Figure:
    """Each random width pattern (`cost.validation.predicted_vs_measured`): the model's predicted latency against
    the measured one, with the diagonal and a ±10% band; the dense network is the calibration point."""
    fig, ax = plt.subplots(figsize=(5.6, 5))
    ax.errorbar(check["measured_ms"], check["predicted_ms"], xerr=check["noise_ms"], fmt="o", ms=5, capsize=2,
                label="random width patterns")
    reference = check.attrs.get("reference_ms")
    if reference:
        ax.plot([reference], [reference], marker="*", ms=12, ls="", color="black", label="dense (calibration)")
    top = 1.08 * float(max(check["measured_ms"].max(), check["predicted_ms"].max(), reference or 0))
    xs = np.linspace(0, top, 10)
    ax.plot(xs, xs, color="gray", lw=1, label="predicted = measured")
    ax.fill_between(xs, 0.9 * xs, 1.1 * xs, color="gray", alpha=0.15, label="±10%")
    ax.set(xlabel="measured end to end (ms per batch)", ylabel="predicted: the sum of the blocks + residual (ms)",
           title=title, xlim=(0, top), ylim=(0, top))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def plot_layer_surface(surface: pd.DataFrame, *, vector_width: int = 16,
                       title: str = "One conv block's time: input x output channels") -> Figure:
    """`cost.validation.layer_surface`: time against output channels, one line per input width (the staircase in
    two dimensions), with the multiples of `vector_width` marked."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for c_in, row in surface.iterrows():
        ax.plot(surface.columns, row.to_numpy(), marker="o", ms=3, label=f"{c_in} input channels")
    lo, hi = int(min(surface.columns)), int(max(surface.columns))
    for c in range((lo + vector_width - 1) // vector_width * vector_width, hi + 1, vector_width):
        ax.axvline(c, color="gray", lw=0.6, alpha=0.5)
    ax.set(xlabel=f"output channels (grey lines: multiples of {vector_width})", ylabel="time per batch (ms)",
           title=title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig
