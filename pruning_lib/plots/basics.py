"""Plots of notebook 01 (examples, training history, confusion matrix), and `figure_png` for widgets."""

from __future__ import annotations

import io
from typing import Sequence

import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch.utils.data import Dataset


def _unnormalize(img: torch.Tensor) -> torch.Tensor:
    """Rescale an image tensor (C, H, W) to [0, 1] for display."""
    lo, hi = img.min(), img.max()
    return (img - lo) / (hi - lo + 1e-8)


def show_examples(dataset: Dataset, class_names: Sequence[str], per_class: int = 8, seed: int = 0) -> plt.Figure:
    """A grid: one row per class, `per_class` random examples each."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=gen).tolist()
    rows: dict[int, list[torch.Tensor]] = {c: [] for c in range(len(class_names))}
    for i in order:
        x, y = dataset[i]
        if len(rows[int(y)]) < per_class:
            rows[int(y)].append(x)
        if all(len(v) == per_class for v in rows.values()):
            break
    fig, axes = plt.subplots(len(class_names), per_class, figsize=(per_class * 1.1, len(class_names) * 1.25),
                             squeeze=False)
    for c, images in rows.items():
        for j, ax in enumerate(axes[c]):
            ax.axis("off")
            if j < len(images):
                img = _unnormalize(images[j]).permute(1, 2, 0).squeeze(-1)
                ax.imshow(img.numpy(), cmap="gray" if img.dim() == 2 else None)
        axes[c][0].set_title(class_names[c], loc="left", fontsize=10)
    fig.suptitle("Examples of each class")
    fig.tight_layout()
    return fig


def plot_history(history: pd.DataFrame, title: str = "Fine-tuning") -> plt.Figure:
    """Training loss and validation accuracy against optimisation steps (one colour per stage)."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.5))
    groups = history.groupby("stage", sort=False) if "stage" in history else [("training", history)]
    for stage, part in groups:
        ax_loss.plot(part["step"], part["train_loss"], marker=".", label=f"train ({stage})")
        ax_loss.plot(part["step"], part["val_loss"], marker="x", linestyle="--", label=f"validation ({stage})")
        ax_acc.plot(part["step"], 100 * part["val_accuracy"], marker=".", label=stage)
    ax_loss.set(title="Loss", xlabel="optimisation step", ylabel="cross-entropy")
    ax_acc.set(title="Validation accuracy", xlabel="optimisation step", ylabel="accuracy (%)")
    ax_loss.legend(fontsize=8)
    ax_acc.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion(matrix: torch.Tensor, class_names: Sequence[str], title: str = "Confusion matrix") -> plt.Figure:
    """Counts of (true class, predicted class); rows are the true class."""
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.imshow(matrix.numpy(), cmap="Blues")
    for (i, j), v in zip([(i, j) for i in range(len(matrix)) for j in range(len(matrix))], matrix.flatten().tolist()):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    fig.tight_layout()
    return fig


def figure_png(fig: Figure, dpi: int = 90) -> bytes:
    """A figure as PNG bytes (for widgets; works from any thread with a non-pyplot Figure)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
