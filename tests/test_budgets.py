"""Several budgets at once: the knapsack against brute force, each iteration's asks, and Prune–Train–Repeat asked
for a speedup and a parameter reduction together, on a clock whose answers are known (1 ms per MFLOP per block)."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

from conftest import SHAPE, loaders
from test_cost import FlopsClock

from pruning_lib.cost import budgets
from pruning_lib.cost.budgets import BudgetPlanner, Targets, iterations_left
from pruning_lib.graph.groups import group_widths
from pruning_lib.measure import count_flops, count_parameters
from pruning_lib.models import small_vgg
from pruning_lib.plan import plan_keeping, widths_for_budgets


def brute_force(scores, options, asks):
    """The least importance removed over every combination that saves every ask (None: none does)."""
    groups = list(options)
    best = None
    for combo in itertools.product(*(range(len(options[g])) for g in groups)):
        saved = {r: sum(options[g][j][1].get(r, 0.0) for g, j in zip(groups, combo)) for r in asks}
        if all(saved[r] >= a - 1e-9 for r, a in asks.items()):
            lost = sum(float(torch.sort(scores[g]).values[: len(scores[g]) - options[g][j][0]].sum())
                       for g, j in zip(groups, combo))
            best = lost if best is None else min(best, lost)
    return best


def lost_of(scores, widths):
    return sum(float(torch.sort(scores[g]).values[: len(scores[g]) - w].sum()) for g, w in widths.items())


def random_instance(rng, groups=3, resources=("latency",)):
    scores, options = {}, {}
    for i in range(groups):
        size = rng.choice([4, 6, 8])
        g = f"g{i}"
        scores[g] = torch.tensor([rng.random() for _ in range(size)])
        options[g] = [(w, {r: float(rng.randint(0, 3) * (size - w)) for r in resources}) for w in range(1, size + 1)]
        options[g][-1] = (size, dict.fromkeys(resources, 0.0))
    return scores, options


def test_one_budget_is_solved_exactly_as_brute_force_finds_it():
    rng = random.Random(0)
    for _ in range(40):
        scores, options = random_instance(rng)
        most = sum(max(sv["latency"] for _, sv in options[g]) for g in options)
        ask = float(rng.randint(1, max(1, int(most))))
        widths = widths_for_budgets(scores, options, {"latency": ask}, resolution=int(ask))   # bins of 1: exact
        saved = sum(dict(options[g])[w]["latency"] for g, w in widths.items())
        assert saved >= ask and lost_of(scores, widths) == pytest.approx(brute_force(scores, options, {"latency": ask}))


def test_two_and_three_budgets_are_all_met_whenever_some_choice_meets_them():
    rng = random.Random(1)
    for _ in range(30):
        resources = ("latency", "params", "flops")[: rng.choice([2, 3])]
        scores, options = random_instance(rng, groups=3, resources=resources)
        asks = {r: float(rng.randint(1, 10)) for r in resources}
        optimum = brute_force(scores, options, asks)
        widths = widths_for_budgets(scores, options, asks)
        saved = {r: sum(dict(options[g])[w][r] for g, w in widths.items()) for r in resources}
        if optimum is None:
            continue
        assert all(saved[r] >= asks[r] - 1e-9 for r in resources), (asks, saved)
        assert lost_of(scores, widths) >= optimum - 1e-9


def test_nothing_asked_keeps_every_width_and_an_ask_beyond_reach_takes_the_most():
    scores, options = random_instance(random.Random(2))
    sizes = {g: len(s) for g, s in scores.items()}
    assert widths_for_budgets(scores, options, {}) == sizes
    assert widths_for_budgets(scores, options, {"latency": 0.0}) == sizes
    most = sum(max(sv["latency"] for _, sv in options[g]) for g in options)
    widths = widths_for_budgets(scores, options, {"latency": 10 * most})
    assert sum(dict(options[g])[w]["latency"] for g, w in widths.items()) == most


def test_iterations_left_lets_the_hardest_target_move_by_its_share():
    assert iterations_left({"latency": 1 / 3, "params": 1 / 4}, 0.1) == math.ceil(math.log(0.25) / math.log(0.9))
    assert iterations_left({"params": 0.95}, 0.1) == 1
    with pytest.raises(ValueError, match="speedup is how many times faster"):
        Targets(speedup=0.5)
    with pytest.raises(ValueError, match="at least one target"):
        Targets()


@pytest.fixture()
def flops_clock(monkeypatch, tmp_path):
    """Entries from FLOPs (1 ms per MFLOP + 0.01 ms per block); the end-to-end judge and the candidate's check
    from the same FLOPs, so every number the planner sees is known."""
    monkeypatch.setenv("PRUNING_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(budgets, "EntryStore", FlopsClock, raising=False)
    import pruning_lib.cost.latency as latency

    monkeypatch.setattr(latency, "EntryStore", FlopsClock)

    def ms(model, batch):
        return count_flops(model, (batch, *SHAPE)) / 1e6

    def speedup(reference, model, input_shape, **kw):
        r, m = ms(reference, input_shape[0]), ms(model, input_shape[0])
        return {"speedup": r / m, "noise": 0.0, "low": r / m, "high": r / m, "reference_ms": r, "ms": m}

    def time_cut(self, model, scores, widths):
        cut = plan_keeping(scores, widths)
        from pruning_lib.surgery import prune_filters
        import copy
        candidate = prune_filters(copy.deepcopy(model), cut)
        now, after = ms(model, self.input_shape[0]), ms(candidate, self.input_shape[0])
        return {"saved_ms": now - after, "noise_ms": 0.0, "now_ms": now, "cut_ms": after}

    from pruning_lib.recover import steps

    monkeypatch.setattr(steps, "measured_speedup", speedup)
    monkeypatch.setattr(BudgetPlanner, "_time_cut", time_cut)
    return ms


def test_a_planner_asks_every_target_its_share_so_that_all_arrive_together(flops_clock):
    torch.manual_seed(0)
    model = small_vgg((16, "M", 32, 32, "M", 48), in_channels=1, num_classes=3, hidden=16).eval()
    planner = BudgetPlanner(model, (8, *SHAPE), Targets(speedup=2.0, params_reduction=3.0), share=0.2, step=4)
    widths = planner.network.widths
    asks = planner.asks(widths, speedup=1.0, latency_ms=10.0)
    n = iterations_left({"latency": 0.5 * (1 - planner.latency_margin), "params": 1 / 3}, 0.2)
    assert asks["params"] == pytest.approx(count_parameters(model) * (1 - (1 / 3) ** (1 / n)))
    assert asks["latency"] == pytest.approx(10.0 * (1 - (0.5 * (1 - planner.latency_margin)) ** (1 / n)))
    assert planner.asks(widths, speedup=2.5, latency_ms=4.0).keys() == {"params"}       # time met: only size


def test_prune_train_repeat_meets_a_speedup_and_a_parameter_target_together(flops_clock, tmp_path):
    from pruning_lib.recover.iterative import PruningSchedule, prune_train_repeat

    torch.manual_seed(0)
    model = small_vgg((16, "M", 32, 32, "M", 48), in_channels=1, num_classes=3, hidden=16).eval()
    train_dl, val_dl = loaders()
    sched = PruningSchedule(target_speedup=2.0, target_params_reduction=3.0, fraction_per_iteration=0.3,
                            finetune_steps=1, rank_batches=1, latency_batch=8, multiple_of=4)
    pruned, history = prune_train_repeat(model, train_dl, val_dl, sched, input_shape=SHAPE, progress=False,
                                         checkpoint=tmp_path / "run.pt")
    last = history.iloc[-1]
    assert last["speedup_low"] >= 2.0 and history["params"].iloc[0] / last["params"] >= 3.0
    before = history.iloc[-2]
    assert before["speedup_low"] < 2.0 or history["params"].iloc[0] / before["params"] < 3.0   # no extra cut
    assert all(w % 4 == 0 or w == model_w for w, model_w in zip(group_widths(pruned).values(),
                                                               group_widths(model).values()))
    assert len(history) <= 1 + iterations_left({"latency": 0.5, "params": 1 / 3}, 0.3) + 1
