"""The one-shot widget (notebook 02): a slider (amount) and a dropdown (criterion) wired to `oneshot.one_shot`."""

from __future__ import annotations

import html
from typing import Iterable, Mapping, Sequence

import torch.nn as nn

from ..rank.criteria import Scores
from ..recover.oneshot import OneShot, check_amount, one_shot

__all__ = ["one_shot_summary", "one_shot_widget"]


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

    from ..plots.ranking import plot_one_shot

    names = list(scores_by_criterion)
    criterion = criterion or names[0]
    if criterion not in scores_by_criterion:
        raise ValueError(f"criterion {criterion!r} has no scores; choose one of {names}")
    check_amount(amount)
    check_amount(max_amount)
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
