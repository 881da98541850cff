"""Latency tables (measured, noise-robust, cached) and the dynamic programme that spends a latency budget."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from conftest import SHAPE, tiny_model
from pruning_lib.graph.groups import group_widths
from pruning_lib.latency_table import LatencyTable, latency_table, table_from_rounds, width_grid
from pruning_lib.plan import plan_keeping, widths_for_latency


def test_width_grid():
    assert width_grid(32, 8) == [8, 16, 24, 32] and width_grid(20, 8) == [8, 16, 20] and width_grid(4, 8) == [4]
    with pytest.raises(ValueError):
        width_grid(8, 0)


def rounds_of(truth: dict[str, float], noise: list[float]) -> list[dict[str, float]]:
    """Timed rounds of a known network: every network's true time plus the round's own offset (shared noise)."""
    return [{name: ms + offset for name, ms in truth.items()} for offset in noise]


def test_paired_differences_cancel_the_noise_shared_by_a_round():
    truth = {"reference": 10.0, "a@8": 7.0, "a@16": 8.5}
    table = table_from_rounds(rounds_of(truth, [0.0, 3.0, -1.0, 0.5, 2.0]), {"a@8": ("a", 8), "a@16": ("a", 16)},
                              {"a": 24})
    assert table.widths["a"] == [8, 16, 24]
    assert table.saved_ms["a"] == pytest.approx([3.0, 1.5, 0.0])          # exact, whatever the rounds' offsets
    assert table.reference_ms == pytest.approx(10.5) and table.saving("a", 10) == pytest.approx(1.5)


def test_a_dip_of_the_staircase_is_kept_out_and_savings_within_the_noise_are_ties():
    shared, own = (0.0, 0.4, 0.0, 0.4), (0.05, -0.05, 0.04, -0.04)        # the round's noise, b's own noise
    rounds = [{"reference": 10.0 + d, "a@8": 8.0 + d, "a@16": 10.5 + d, "b@8": 9.99 + d + e} for d, e in zip(shared, own)]
    table = table_from_rounds(rounds, {"a@8": ("a", 8), "a@16": ("a", 16), "b@8": ("b", 8)}, {"a": 24, "b": 16})
    assert table.saved_ms["a"] == pytest.approx([2.0, 0.0, 0.0])          # wider costs more: no negative saving
    assert table.saved_ms["b"] == [0.0, 0.0]                               # 0.01 ms within b's noise (0.05): a tie
    staircase = table_from_rounds(rounds_of({"reference": 10, "c@8": 8, "c@16": 9.5, "c@24": 8.5}, [0, 0.1]),
                                  {"c@8": ("c", 8), "c@16": ("c", 16), "c@24": ("c", 24)}, {"c": 32})
    assert staircase.saved_ms["c"] == pytest.approx([2.0, 1.5, 1.5, 0.0])  # narrower never saves less


def brute_force(scores, table, saving, floor=1):
    """Every combination of widths: the one that saves enough (by the table) and loses the least importance."""
    groups = list(scores)
    best, choice = float("inf"), None
    for combo in itertools.product(*[[w for w in table.widths[g] if w >= floor] for g in groups]):
        saved = sum(table.saving(g, w) for g, w in zip(groups, combo))
        lost = sum(float(torch.sort(scores[g]).values[: len(scores[g]) - w].sum()) for g, w in zip(groups, combo))
        if saved >= saving - 1e-12 and lost < best - 1e-12:
            best, choice = lost, dict(zip(groups, combo))
    return best, choice


@pytest.mark.parametrize("seed", range(6))
def test_the_dynamic_programme_finds_the_best_combination(seed):
    gen = torch.Generator().manual_seed(seed)
    sizes = {"a": 24, "b": 16, "c": 32}
    scores = {g: torch.rand(n, generator=gen) for g, n in sizes.items()}
    grid = {g: width_grid(n, 8) for g, n in sizes.items()}
    saved = {}
    for g, ws in grid.items():                           # a random staircase, non-increasing in the width
        steps = torch.rand(len(ws), generator=gen).tolist()
        saved[g] = [round(sum(steps[i:-1]), 2) for i in range(len(ws))]
    table = LatencyTable(10.0, 0.01, grid, saved)
    most = sum(s[0] for s in saved.values())
    for target in (0.1 * most, 0.5 * most, 0.9 * most):
        widths = widths_for_latency(scores, table, target, resolution_ms=0.001)
        best, _ = brute_force(scores, table, target)
        lost = sum(float(torch.sort(scores[g]).values[: sizes[g] - w].sum()) for g, w in widths.items())
        assert sum(table.saving(g, w) for g, w in widths.items()) >= target - 1e-9
        assert lost == pytest.approx(best)
    with pytest.raises(ValueError, match="cannot be saved"):
        widths_for_latency(scores, table, most + 1)
    assert widths_for_latency(scores, table, 0.0) == sizes


def test_plan_keeping_removes_the_lowest_scores():
    scores = {"a": torch.tensor([0.5, 0.1, 0.9, 0.3])}
    assert plan_keeping(scores, {"a": 2}) == {"a": [1, 3]} and plan_keeping(scores, {"a": 4}) == {"a": []}


def test_a_table_is_measured_once_and_read_back_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNING_CACHE_DIR", str(tmp_path))
    model = tiny_model().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    table = latency_table(model, (4, *SHAPE), form="deploy", step=4, rounds=3, calls=1, progress=False)
    assert set(table.widths) == set(group_widths(model))
    for g, width in group_widths(model).items():
        assert table.widths[g] == width_grid(width, 4) and table.saved_ms[g][-1] == 0.0
        assert all(a >= b for a, b in zip(table.saved_ms[g], table.saved_ms[g][1:]))
    assert table.reference_ms > 0 and table.settings["form"] == "deploy"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())       # the model is left as it was
    files = list(tmp_path.glob("latency-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["reference_ms"] == table.reference_ms
    assert latency_table(model, (4, *SHAPE), form="deploy", step=4, rounds=3, calls=1, progress=False) == table
    other = latency_table(model, (8, *SHAPE), form="deploy", step=4, rounds=3, calls=1, progress=False)
    assert other.settings["input_shape"] == [8, *SHAPE] and len(list(tmp_path.glob("latency-*.json"))) == 2
