"""Latency tables (measured, noise-robust, cached) and the dynamic programme that spends a latency budget."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from conftest import SHAPE, tiny_model
from pruning_lib.graph.groups import group_widths
from pruning_lib.latency_table import LatencyTable, latency_table, table_from_rounds, time_per_flop, width_grid
from pruning_lib.plan import plan_keeping, widths_for_latency


def test_width_grid():
    assert width_grid(32, 8) == [8, 16, 24, 32] and width_grid(20, 8) == [8, 16, 20] and width_grid(4, 8) == [4]
    assert width_grid(32, 8, min_fraction=0.5) == [16, 24, 32]
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


def test_time_per_flop_halves_each_group_and_divides_by_the_flops_removed():
    table = LatencyTable(10.0, 0.1, {"a": [8, 16, 24, 32], "b": [8, 12]}, {"a": [3.0, 2.0, 1.0, 0.0], "b": [0.5, 0.0]})
    t = time_per_flop(table, {"a": 1e-3, "b": 2e-3}, batch=4)
    assert t.loc["a", "cut to"] == 16 and t.loc["a", "ms saved"] == 2.0
    assert t.loc["a", "MFLOPs saved"] == pytest.approx(1e3 * 1e-3 * 16 * 4)                # 16 channels x 4 images
    assert t.loc["b", "cut to"] == 8 and t.loc["b", "µs per MFLOP"] == pytest.approx(1e3 * 0.5 / (2 * 4 * 4))


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


def test_asking_for_exactly_the_most_a_table_can_save_gives_the_narrowest_widths():
    """The bins round each saving down (1 ms = 133.3 bins of 3/400 ms): at the very top their sum misses the target
    by a bin or two, and the most the table can save is taken."""
    table = LatencyTable(10.0, 0.01, {g: [8, 16, 24] for g in "abc"},
                         {"a": [1.0, 1.0, 0.0], "b": [1.0, 0.5, 0.0], "c": [1.0, 0.2, 0.0]})
    scores = {g: torch.rand(24) for g in "abc"}
    assert widths_for_latency(scores, table, 3.0) == {"a": 16, "b": 8, "c": 8}      # a's 16 saves as much as its 8
    assert widths_for_latency(scores, table, 2.0, min_keep={"a": 24, "b": 1, "c": 1}) == {"a": 24, "b": 8, "c": 8}
    with pytest.raises(ValueError, match="cannot be saved"):
        widths_for_latency(scores, table, 3.01)


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


# ---------------------------------------------------------------- a speed target in Prune–Train–Repeat
def test_a_speed_target_cuts_by_the_table_and_stops_on_the_measured_speedup(monkeypatch, tmp_path):
    """With a table and a judge whose answers are known (time proportional to FLOPs), the loop saves its share of
    the latency per iteration and stops at the first network measured beyond the target."""
    from conftest import loaders
    from pruning_lib.measure import count_flops
    from pruning_lib.plan import flops_per_channel
    from pruning_lib.recover import iterative

    def table(model, input_shape, **kw):                      # 1 ms per MFLOP, each group's widths in steps of 1
        cost = flops_per_channel(model, input_shape[1:])
        widths = group_widths(model)
        return LatencyTable(count_flops(model, (1, *input_shape[1:])) / 1e6, 0.0,
                            {g: list(range(1, n + 1)) for g, n in widths.items()},
                            {g: [1e3 * cost[g] * (n - w) for w in range(1, n + 1)] for g, n in widths.items()})

    def speedup(reference, model, input_shape, **kw):
        ratio = count_flops(reference, (1, *input_shape[1:])) / count_flops(model, (1, *input_shape[1:]))
        return {"speedup": ratio, "low": ratio - 0.05, "reference_ms": 1.0, "ms": 1.0 / ratio}

    monkeypatch.setattr(iterative, "latency_table", table)
    monkeypatch.setattr(iterative, "measured_speedup", speedup)
    model = tiny_model().eval()
    train_dl, val_dl = loaders()
    sched = iterative.PruningSchedule(target_speedup=2.0, fraction_per_iteration=0.2, finetune_steps=1, rank_batches=1)
    pruned, history = iterative.prune_train_repeat(model, train_dl, val_dl, sched, input_shape=SHAPE, progress=False,
                                                   checkpoint=tmp_path / "run.pt")
    assert history["speedup"].iloc[0] == 1.0 and history["speedup_low"].iloc[-1] >= 2.0
    assert (history["speedup_low"].iloc[1:-1] < 2.0).all()                  # it stopped at the first one beyond
    flops = history["gflops"].tolist()
    # each cut saves its 20% share by the table, give or take one channel (the grid) and the table's additivity
    assert all(0.7 * a <= b <= 0.82 * a for a, b in zip(flops, flops[1:])), flops
    again, history2 = iterative.prune_train_repeat(model, train_dl, val_dl, sched, input_shape=SHAPE, progress=False,
                                                   checkpoint=tmp_path / "run.pt")
    assert len(history2) == len(history) and group_widths(again) == group_widths(pruned)   # resumed: done


def test_a_speed_target_on_real_timings_runs_end_to_end(tmp_path, monkeypatch):
    """Real tables and a real judge on a tiny network: the loop measures, cuts and records every speedup."""
    from conftest import loaders
    from pruning_lib.recover.iterative import PruningSchedule, prune_train_repeat

    monkeypatch.setenv("PRUNING_CACHE_DIR", str(tmp_path))
    train_dl, val_dl = loaders()
    sched = PruningSchedule(target_speedup=1.5, fraction_per_iteration=0.3, finetune_steps=0, rank_batches=1,
                            latency_batch=32, latency_step=2)
    pruned, history = prune_train_repeat(tiny_model().eval(), train_dl, val_dl, sched, input_shape=SHAPE,
                                         progress=False)
    assert {"speedup", "speedup_low", "latency_ms"} <= set(history.columns) and history["latency_ms"].gt(0).all()
    assert len(history) >= 1 and sum(group_widths(pruned).values()) <= sum(group_widths(tiny_model()).values())


def test_a_speed_target_refuses_a_flops_regulariser_beside_it():
    from pruning_lib.recover.iterative import PruningSchedule

    with pytest.raises(ValueError, match="flops_lambda=0"):
        PruningSchedule(target_speedup=2.0, flops_lambda=0.1)
    assert PruningSchedule(target_speedup=2.0, flops_lambda=0.0).flops_lambda == 0.0


def test_the_side_by_side_benchmark_reports_each_arm_against_the_others():
    """benchmarks/latency_arms.py's tables from a made-up seed: speed ratios from one harness, paired gaps as given."""
    from conftest import benchmark_module

    arms = benchmark_module("latency_arms")
    ms = {"dense": 20.0, "flops": 5.0, "flops, step": 4.0, "latency": 4.0, "asked 3x": 6.5}
    table = [{"form": f, "batch": b, "model": m, "latency_ms": v * (2 if f == "deploy" else 1), "flops_ratio": 5.0}
             for f in ("deploy", "onnxruntime") for b in (1, 64) for m, v in ms.items()]
    gap = {"gap_points": -0.3, "noise_points": 0.8}
    result = {"model": "small_vgg", "seed": 0, "table": table, "targets": {"latency": 5.0, "asked 3x": 3.0},
              "accuracy_points": {"dense": 85.0, "flops": 84.5},
              "gaps": {"latency vs flops": gap, "latency vs flops, step": {"gap_points": -1.0, "noise_points": 0.8}},
              "finetune_steps": {a: 100 for a in arms.ARMS}, "iterations": {a: 3 for a in arms.ARMS}, "asked": None}
    speed = arms.speed_ratios(result)
    assert len(speed) == 4 and (speed["latency / flops"] == 1.25).all() and (speed["speedup latency"] == 5.0).all()
    text = arms.report([result])
    assert "| small_vgg | 0.8 | 0 | 85.0 | 84.5 | -0.3 ± 0.8 | -1.0 ± 0.8 | 100/100/100 | 3/3/3 | 5.0 |" in text
    verdict = arms.verdicts([result]).iloc[0]
    assert verdict["(c)/(a) deploy, 64"] == 1.25 and verdict["vs (a)"] == "met"         # 1.25x, -0.3 within ±0.8
    assert verdict["(c)/(b) ORT, 64"] == 1.0 and verdict["vs (b)"] == "missed"
