"""Plots for notebook 05 (pruning a ResNet): which convs write and read each channel group."""

from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
from torch import nn

from ..graph.groups import ChannelGroup

__all__ = ["plot_channel_groups", "short_name"]

KIND_COLORS = {"residual stream": "tab:red", "inside a block": "tab:blue"}


def short_name(name: str) -> str:
    """``features.4.0.conv1.0`` -> ``4.0.conv1``: enough to tell the convs of a ResNet apart."""
    parts = name.split(".")
    if parts[0] == "features" and len(parts) > 1:
        parts = parts[1:]
    if len(parts) > 1 and parts[-1] == "0" and not parts[-2].isdigit():
        parts = parts[:-1]                      # the conv inside a conv + BN Sequential
    return ".".join(parts)


def plot_channel_groups(model: nn.Module, groups: Mapping[str, ChannelGroup], *,
                        title: str = "Channel groups: which convs write (■) and read (○) each group") -> plt.Figure:
    """One row per prunable group, one column per conv (forward order): ■ the conv writes the group's channels
    (its filters), ○ it reads them (its input channels); red rows are residual streams, blue rows groups
    inside a block.  The first Linear, reading the last stream, is the last column."""
    kept = [g for g in groups.values() if not g.refused]
    members = {n for g in kept for n in (*g.producers, *g.readers)}
    columns = [n for n, _ in model.named_modules() if n in members]
    x = {n: i for i, n in enumerate(columns)}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.42 * len(columns) + 2.5), 0.42 * len(kept) + 1.8))
    for row, g in enumerate(kept):
        color = KIND_COLORS["residual stream" if len(g.producers) > 1 else "inside a block"]   # as course.resnet.group_kind
        ax.axhline(row, color=color, alpha=0.15, lw=6)
        ax.scatter([x[p] for p in g.producers], [row] * len(g.producers), marker="s", s=60, color=color)
        ax.scatter([x[r] for r in g.readers], [row] * len(g.readers), marker="o", s=60, facecolors="white",
                   edgecolors=color, linewidths=1.5)
    ax.set_yticks(range(len(kept)), [f"{short_name(g.name)} ({g.size} ch)" for g in kept], fontsize=8)
    ax.set_xticks(range(len(columns)), [short_name(c) for c in columns], rotation=60, ha="right", fontsize=8)
    ax.set_ylim(len(kept) - 0.5, -0.5)
    ax.set(title=title, xlabel="conv (and the first Linear), in forward order", ylabel="group (named by its first conv)")
    for kind, color in KIND_COLORS.items():
        ax.plot([], [], color=color, lw=6, alpha=0.4, label=kind)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig
