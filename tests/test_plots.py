"""The figures read well: plain log ticks, labels that do not collide, legends off the data, sawtooths whose
iterations are named; and ``make demo``'s kernels start without ipykernel's TCP warning.

Each check reads the drawn figure (what `fig.canvas.draw()` laid out), not the numbers the plotting code chose.
"""

from __future__ import annotations

import itertools
import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.text import Text

from pruning_lib.plots import iterative, layout, ranking, speed


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def drawn(fig):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def overlap(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0) * max(h, 0)


def crowded_points() -> pd.DataFrame:
    """Nine networks, six of them within 2.5 to 4.6 MFLOPs and 83 to 84.5%, with long names (as notebook 03's)."""
    rows = [("dense", "dense", 65.0, .8566), ("headline", "loop", 12.0, .851), ("from scratch", "scratch", 12.0, .827),
            ("end of the loop", "loop", 4.4, .838), ("one shot", "one shot", 3.7, .836),
            ("random", "random", 2.8, .828), ("loop, fine-tuned with cross-entropy", "loop", 3.4, .8386),
            ("loop, fine-tuned with the teacher", "loop", 3.5, .8402), ("one shot, same steps", "one shot", 4.0, .835)]
    return pd.DataFrame([{"name": n, "group": g, "mflops": m, "accuracy": a, "n": 5200} for n, g, m, a in rows])


def history(flops_left, before, after) -> pd.DataFrame:
    return pd.DataFrame({"iteration": range(len(flops_left)), "gflops": np.asarray(flops_left, float) / 1e3,
                         "accuracy_before_finetune": before, "accuracy_after_finetune": after})


SAWTOOTH = history([100, 63, 47, 27, 19, 12, 9, 7, 6.5],
                   [.856, .825, .832, .50, .827, .808, .808, .815, .83],
                   [.856, .842, .838, .845, .85, .835, .838, .852, .846])


# ---- accuracy against cost (notebook 03, section 8)

def test_cost_plot_ticks_are_plain_numbers():
    fig = iterative.plot_accuracy_vs_flops(crowded_points())
    drawn(fig)
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    shown = [t for t in ax.xaxis.get_majorticklabels() if t.get_text() and lo <= t.get_position()[0] <= hi]
    texts = [t.get_text() for t in shown]
    assert len(texts) >= 3, texts
    assert not any("×" in t or "times" in t or "$" in t or "10^" in t for t in texts), texts
    assert [float(t) for t in texts] == pytest.approx([t.get_position()[0] for t in shown])   # each says its value
    assert not any(t.get_text() for t in ax.xaxis.get_minorticklabels())
    assert "MFLOPs" in ax.get_xlabel() and "%" in ax.get_ylabel()


@pytest.mark.parametrize("lo, hi", [(2.8, 65), (0.3, 0.9), (3.1, 3.9), (120, 15_000), (1e-5, 0.1)])
def test_log_ticks_read_as_numbers_on_any_range(lo, hi):
    fig, ax = plt.subplots()
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    layout.readable_log_axis(ax.xaxis)
    drawn(fig)
    labels = [t for t in ax.xaxis.get_majorticklabels() if t.get_text() and lo <= t.get_position()[0] <= hi]
    assert len(labels) >= 2
    for t in labels:
        if lo >= 1e-3:                      # plain numbers where {:g} writes them plainly
            assert float(t.get_text()) == pytest.approx(t.get_position()[0])
        assert "×" not in t.get_text() and "times" not in t.get_text()


def test_cost_plot_labels_do_not_overlap_on_a_crowded_plot():
    points = crowded_points()
    fig = iterative.plot_accuracy_vs_flops(points)
    renderer = drawn(fig)
    ax = fig.axes[0]
    labels = [t for t in ax.texts if t.get_text() in set(points["name"])]
    assert sorted(t.get_text() for t in labels) == sorted(points["name"])
    boxes = [Text.get_window_extent(t, renderer) for t in labels]       # the text only, not its leader line
    for (a, ta), (b, tb) in itertools.combinations(zip(boxes, labels), 2):
        assert overlap(a, b) == 0, f"{ta.get_text()!r} overlaps {tb.get_text()!r}"
    frame = ax.get_window_extent(renderer)
    points_px = ax.transData.transform(points[["mflops", "accuracy"]].to_numpy() * [1, 100])
    for box, t in zip(boxes, labels):
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, t.get_text()
        assert not any(box.contains(x, y) for x, y in points_px), f"{t.get_text()!r} covers a point"


def test_cost_plot_has_a_legend_of_groups_off_the_axes():
    fig = iterative.plot_accuracy_vs_flops(crowded_points())
    renderer = drawn(fig)
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["dense", "loop", "scratch", "one shot", "random"]
    assert overlap(legend.get_window_extent(renderer), ax.get_window_extent(renderer)) == 0


def test_place_labels_avoids_labels_already_on_the_axes():
    fig, ax = plt.subplots(figsize=(3, 3))
    ax.plot([0, 1], [0, 1], "o")
    ax.set(xlim=(-1, 2), ylim=(-1, 2))
    renderer = drawn(fig)
    first = layout.place_labels(ax, [0.5, 0.5], [0.5, 0.5], ["the same place", "twice"])
    second = layout.place_labels(ax, [0.5], [0.5], ["and a third time"])
    boxes = [Text.get_window_extent(t, renderer) for t in first + second]
    for a, b in itertools.combinations(boxes, 2):
        assert overlap(a, b) == 0
    with pytest.raises(ValueError, match="as many"):
        layout.place_labels(ax, [0, 1], [0], ["a"])


# ---- criteria against the oracle (notebooks 02 and 05)

def oracle_data(names, seed=0):
    g = torch.Generator().manual_seed(seed)
    oracle = {n: 10 ** (-5 + 4 * torch.rand(50, generator=g)) for n in names}
    scores = {"taylor": {n: oracle[n].sqrt() * (1 + torch.rand(50, generator=g)) for n in names},
              "l1": {n: 0.08 + 0.15 * i / len(names) + 0.02 * torch.rand(50, generator=g) for i, n in enumerate(names)}}
    return scores, oracle


GROUPS = ["features.0.0", "features.3.0.conv1.0", "features.4.0.shortcut.0", "features.4.1.conv1.0",
          "features.5.0.shortcut.0", "features.5.1.conv1.0"]


@pytest.mark.parametrize("unit", ["layer", "group"])
def test_oracle_legend_hides_no_point(unit):
    scores, oracle = oracle_data(GROUPS)
    fig = ranking.plot_criteria_vs_oracle(scores, oracle, ("taylor", "l1"), unit=unit)
    renderer = drawn(fig)
    legend = fig.axes[-1].get_legend()
    box = legend.get_window_extent(renderer)
    for ax in fig.axes:
        for collection in ax.collections:
            dots = collection.get_offset_transform().transform(collection.get_offsets())
            assert not any(box.contains(x, y) for x, y in dots), f"the legend hides a dot of {ax.get_title()}"


def test_oracle_plot_words_follow_the_unit():
    scores, oracle = oracle_data(GROUPS)
    per_layer = ranking.plot_criteria_vs_oracle(scores, oracle, ("taylor", "l1"))        # notebook 02's call
    per_group = ranking.plot_criteria_vs_oracle(scores, oracle, ("taylor", "l1"), unit="group")
    assert all("per layer" in ax.get_ylabel() for ax in per_layer.axes)
    assert per_layer.axes[-1].get_legend().get_title().get_text() == "layer"
    assert "filter" in per_layer.get_suptitle()
    assert all("per group" in ax.get_ylabel() and "layer" not in ax.get_ylabel() for ax in per_group.axes)
    assert per_group.axes[-1].get_legend().get_title().get_text() == "channel group"
    assert "group" in per_group.get_suptitle() and "filter" not in per_group.get_suptitle()
    with pytest.raises(ValueError, match="unit"):
        ranking.plot_criteria_vs_oracle(scores, oracle, ("taylor",), unit="block")


def test_oracle_plot_ticks_have_no_mantissa_times_power():
    scores, oracle = oracle_data(GROUPS)
    fig = ranking.plot_criteria_vs_oracle(scores, oracle, ("taylor", "l1"), unit="group")
    drawn(fig)
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            texts = [t.get_text() for t in axis.get_majorticklabels() + axis.get_minorticklabels()]
            assert not any("times" in t or "×" in t for t in texts), texts


# ---- the sawtooth (notebooks 03 and 05)

def tick_iterations(ax) -> list[str]:
    return [t.get_text().split("\n")[0] for t in ax.xaxis.get_majorticklabels() if t.get_text()]


def test_sawtooth_names_every_iteration_and_its_markers():
    fig = iterative.plot_sawtooth(SAWTOOTH, n_images=400)
    drawn(fig)
    ax = fig.axes[0]
    assert tick_iterations(ax) == [str(i) for i in range(9)]
    assert [t.get_text().split("\n")[1] for t in ax.xaxis.get_majorticklabels()][:4] == ["100%", "63%", "47%", "27%"]
    assert "iteration" in ax.get_xlabel() and "FLOPs left" in ax.get_xlabel()
    assert "accuracy (%)" in ax.get_ylabel()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("▼" in t and "prune" in t for t in legend) and any("●" in t and "fine-tune" in t for t in legend)
    # the ▼ of iteration i stands above tick i
    before = [line for line in ax.get_lines() if line.get_marker() == "v"][0]
    assert list(before.get_xdata()) == list(range(1, 9))


def test_live_sawtooth_figure_names_its_iterations():
    """LiveSawtooth draws on a pyplot-free Figure; a long run labels at most `max_ticks` iterations, first to last."""
    n = 31
    long_run = history(100 * 0.93 ** np.arange(n), np.full(n, 0.8), np.full(n, 0.85))
    fig = Figure(figsize=(7, 3.8))
    ax = fig.subplots()
    iterative.draw_sawtooth(ax, long_run, n_images=400)
    fig.canvas.draw()
    shown = [int(t) for t in tick_iterations(ax)]
    assert shown[0] == 0 and len(shown) <= 12 and shown == sorted(shown)
    assert shown[-1] >= n - 1 - (shown[1] - shown[0])


def test_sawtooths_drawn_together_explain_the_markers_once():
    fig, ax = plt.subplots()
    iterative.draw_sawtooth(ax, SAWTOOTH, label="taylor")
    iterative.draw_sawtooth(ax, SAWTOOTH, label="random")
    labels = [t.get_text() for t in ax.legend().get_texts()]
    assert labels.count(iterative.PRUNED) == 1 and labels.count(iterative.TUNED) == 1
    assert "taylor" in labels and "random" in labels


def test_criteria_plot_numbers_each_marker_with_its_iteration():
    other = history([100, 88, 81, 75, 70, 67, 58, 54, 52], np.linspace(.85, .78, 9), np.linspace(.855, .86, 9))
    fig = iterative.plot_criteria({"taylor": SAWTOOTH, "random": other}, title="the same schedule")
    renderer = drawn(fig)
    for ax, first in zip(fig.axes, (1, 0)):           # the ▼ panel starts at iteration 1, the ● panel at 0
        numbers = sorted(int(t.get_text()) for t in ax.texts)
        assert numbers == sorted(2 * list(range(first, 9)))
        boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]
        overlapping = sum(overlap(a, b) > 0 for a, b in itertools.combinations(boxes, 2))
        assert overlapping == 0
    assert "▼" in fig.axes[0].get_title() and "●" in fig.axes[1].get_title()
    assert all("FLOPs left" in ax.get_xlabel() for ax in fig.axes)


# ---- make demo's kernels

@pytest.mark.skipif(os.name != "posix", reason="IPC sockets are Unix sockets")
@pytest.mark.parametrize("runs", [2, 4])
def test_time_by_type_legend_hides_no_bar_and_no_total(runs):
    """Notebook 05's chart (and notebook 04's): the legend stands clear of every bar and every total, however many
    runs and however their times compare (the pruned run, drawn last, is the shortest bar)."""
    types = ["Conv2d", "BatchNorm2d", "MaxPool2d", "ReLU", "Linear", "AdaptiveAvgPool2d", "(outside modules)"]
    by_type = {f"run {i}, deploy": pd.Series({t: (20.0 / (i + 1) if t == "Conv2d" else 1.0 + 0.1 * k)
                                              for k, t in enumerate(types)}) for i in range(runs)}
    fig = speed.plot_time_by_type(by_type, title="where the time goes")
    renderer = drawn(fig)
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    bars = [p.get_window_extent(renderer) for p in ax.patches]
    totals = [t.get_window_extent(renderer) for t in ax.texts]
    assert bars and len(totals) == runs
    assert all(overlap(legend, b) == 0 for b in bars), "the legend hides a bar"
    assert all(overlap(legend, t) == 0 for t in totals), "the legend hides a total"
    figure = fig.bbox
    assert figure.x0 <= legend.x0 and legend.x1 <= figure.x1 + 1, "the legend is cut off by the figure's edge"


def test_demo_kernel_starts_without_the_tcp_warning(tmp_path, capfd):
    from pruning_lib.course import demo

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("profile = 'none'", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print(profile * 2)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source, out = tmp_path / "tiny.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, source)
    demo.execute(source, out, {"profile": "ab"}, cwd=tmp_path, timeout=600)     # a hang bound for a print
    captured = capfd.readouterr()            # the kernel is a child process writing to this process's stderr
    assert "without encryption" not in captured.err + captured.out
    assert nbformat.read(out, as_version=4).cells[-1].outputs[0]["text"] == "abab\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ipynb", "tiny.ipynb"]    # no socket files left
