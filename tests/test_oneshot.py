"""One-shot pruning, the sweep, ranking.json and the widget's functions, on a tiny network (no browser)."""

import copy
import json
import math

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from conftest import masked_forward
from pruning_lib.recover import oneshot
from pruning_lib.graph.groups import group_widths
from pruning_lib.course import reports
from pruning_lib.rank.criteria import rank_all
from pruning_lib.recover.evaluation import evaluate
from pruning_lib.models import small_vgg
from pruning_lib.rank.oracle import compare_with_paper, spearman, spearman_table
from pruning_lib.plan import plan_from_scores
from pruning_lib.surgery import prune_filters
from pruning_lib.widgets.oneshot import one_shot_summary, one_shot_widget

INPUT = (1, 8, 8)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = small_vgg((4, "M", 6, "M", 8), in_channels=1, num_classes=3).eval()
    for bn in (mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    return m


@pytest.fixture(scope="module")
def loader(model):
    """Inputs labelled by the unpruned model itself: its accuracy is exactly 1."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 16, *INPUT, generator=gen)
    with torch.no_grad():
        return [(xb, model(xb).argmax(1)) for xb in x]


@pytest.fixture(scope="module")
def scores(model, loader):
    raw = rank_all(model, loader, ["taylor", "l2", "random"], normalize=None)
    return oneshot.selection_scores(raw)


def state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def assert_unchanged(m, before):
    after = m.state_dict()
    assert list(after) == list(before)
    for k, v in before.items():
        assert torch.equal(after[k], v), k


# ---------------------------------------------------------------- pruning a copy
@pytest.mark.parametrize("amount", [0.0, 0.2, 0.5, 0.8])
def test_prune_copy_is_real_surgery_on_a_copy(model, loader, scores, amount):
    before = state(model)
    pruned, plan = oneshot.prune_copy(model, scores["taylor"], amount)
    assert_unchanged(model, before)
    total = sum(group_widths(model).values())
    assert sum(map(len, plan.values())) == round(amount * total)
    assert sum(group_widths(pruned).values()) == total - round(amount * total)
    x = loader[0][0]
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), masked_forward(model, plan, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("amount", [0.0, 0.25, 0.5, 0.75])  # slider values
def test_one_shot_matches_an_independent_computation(model, loader, scores, amount):
    before = state(model)
    r = oneshot.one_shot(model, scores["l2"], amount, loader, input_shape=INPUT, criterion="l2")
    assert_unchanged(model, before)
    plan = plan_from_scores(scores["l2"], fraction=amount)
    by_hand = prune_filters(copy.deepcopy(model), plan)
    assert r.criterion == "l2" and r.amount == amount
    assert r.accuracy == evaluate(by_hand, loader)["accuracy"]
    assert r.removed == {n: len(v) for n, v in plan.items()}
    assert r.kept == group_widths(by_hand)
    assert r.filters_removed == sum(r.removed.values()) and r.filters_total == 18
    assert r.params == sum(p.numel() for p in by_hand.parameters())
    assert r.fraction_removed == pytest.approx(r.filters_removed / 18)
    if amount == 0:
        assert r.accuracy == 1.0 and r.filters_removed == 0


def test_more_pruning_costs_fewer_flops_and_params(model, loader, scores):
    results = [oneshot.one_shot(model, scores["taylor"], a, loader, input_shape=INPUT) for a in (0.0, 0.3, 0.6)]
    assert results[0].flops > results[1].flops > results[2].flops
    assert results[0].params > results[1].params > results[2].params


def test_bad_amounts_and_scores_are_refused(model, loader, scores):
    for bad in (-0.1, 1.0, 1.5, True):
        with pytest.raises(ValueError, match="amount"):
            oneshot.one_shot(model, scores["taylor"], bad, loader, input_shape=INPUT)
    wrong = dict(scores["taylor"])
    wrong.pop(next(iter(wrong)))
    with pytest.raises(ValueError, match="prunable convs"):
        oneshot.prune_copy(model, wrong, 0.3)


def test_selection_scores_normalise_criteria_but_not_the_oracle():
    raw = {"taylor": {"a": torch.tensor([3.0, 4.0])}, "oracle": {"a": torch.tensor([3.0, 4.0])}}
    sel = oneshot.selection_scores(raw)
    torch.testing.assert_close(sel["taylor"]["a"], torch.tensor([0.6, 0.8]))
    torch.testing.assert_close(sel["oracle"]["a"], torch.tensor([3.0, 4.0]))


# ---------------------------------------------------------------- the sweep and the per-layer table
def test_sweep(model, loader, scores):
    before = state(model)
    amounts = [0.0, 0.3, 0.6]
    table = oneshot.sweep(model, scores, amounts, loader, input_shape=INPUT)
    assert_unchanged(model, before)
    assert len(table) == len(scores) * len(amounts)
    assert list(table["criterion"].unique()) == list(scores)
    base = table[table["amount"] == 0]
    assert (base["accuracy"] == 1.0).all() and (base["filters_removed"] == 0).all()
    for criterion in scores:
        part = table[table["criterion"] == criterion]
        assert list(part["amount"]) == amounts
        assert list(part["filters_removed"]) == [round(a * 18) for a in amounts]
        assert part["mflops"].is_monotonic_decreasing
        r = oneshot.one_shot(model, scores[criterion], 0.6, loader, input_shape=INPUT)
        assert part["accuracy"].iloc[-1] == r.accuracy
    removed_cols = [c for c in table.columns if c.startswith("removed:")]
    assert (table[removed_cols].sum(axis=1) == table["filters_removed"]).all()


def test_removed_per_layer_follows_the_plans(scores):
    table = oneshot.removed_per_layer(scores, 0.5)
    assert list(table.columns) == ["filters", *scores]
    assert table["filters"].to_dict() == {n: len(s) for n, s in scores["taylor"].items()}
    for criterion in scores:
        assert table[criterion].sum() == 9
        assert (table[criterion] < table["filters"]).all()  # the floor: no layer is emptied
    # a criterion that rates the last layer lowest empties it first (down to min_keep)
    last = list(scores["taylor"])[-1]
    skewed = {n: s + (0 if n == last else 10) for n, s in scores["taylor"].items()}
    assert oneshot.removed_per_layer({"skewed": skewed}, 0.3)["skewed"].to_dict()[last] == 5


# ---------------------------------------------------------------- Spearman: what tests/test_criteria.py lacks
def test_spearman_recovers_a_known_correlation():
    # bivariate normal with Pearson r: Spearman ρ = (6/π) arcsin(r/2)
    gen = torch.Generator().manual_seed(0)
    a, noise = torch.randn(2, 20000, generator=gen, dtype=torch.float64)
    for r in (0.3, 0.8):
        b = r * a + math.sqrt(1 - r * r) * noise
        assert spearman(a, b) == pytest.approx(6 / math.pi * math.asin(r / 2), abs=0.02)
    assert spearman(torch.exp(a), a ** 3) == pytest.approx(1.0)  # ranks only: any monotone map


def test_spearman_table_identical_reversed_random():
    gen = torch.Generator().manual_seed(0)
    oracle = {"a": torch.rand(500, generator=gen), "b": torch.rand(700, generator=gen)}
    table = spearman_table({"same": oracle, "reversed": {n: -s for n, s in oracle.items()},
                            "random": {n: torch.rand(len(s), generator=gen) for n, s in oracle.items()}}, oracle)
    assert table.loc["same", ["a", "b", "per_layer_mean", "all_layers_raw"]].tolist() == pytest.approx([1.0] * 4)
    assert table.loc["reversed", "per_layer_mean"] == pytest.approx(-1.0)
    assert abs(table.loc["random", "per_layer_mean"]) < 0.1 and abs(table.loc["random", "all_layers_raw"]) < 0.1


def test_compare_with_paper_layout():
    table = pd_table()
    both = compare_with_paper(table)
    assert list(both.index) == ["taylor", "l2", "random", "std_activation", "mean_activation", "mutual_information"]
    assert both.loc["taylor", "paper: all layers (L2)"] == 0.73 and both.loc["l2", "paper: per layer"] == 0.27
    assert both.loc["taylor", "ours: all layers (L2)"] == 0.5
    assert math.isnan(both.loc["mutual_information", "ours: all layers (L2)"])
    assert math.isnan(both.loc["random", "paper: all layers (raw)"])


# ---------------------------------------------------------------- reports/ranking.json
def pd_table():
    import pandas as pd
    return pd.DataFrame({"per_layer_mean": [0.4, 0.1, 0.0], "all_layers_raw": [-0.1, 0.0, 0.05],
                         "all_layers_l2": [0.5, 0.3, 0.2]}, index=["taylor", "l2", "random"])


def test_ranking_json_schema(tmp_path, model, loader, scores):
    table = spearman_table(rank_all(model, loader, list(scores), normalize=None),
                           {n: s.abs() for n, s in scores["taylor"].items()})
    sweep = oneshot.sweep(model, {**scores, "oracle": scores["taylor"]}, [0.0, 0.5], loader, input_shape=INPUT)
    report = reports.ranking_report(table, sweep)
    path = reports.write_ranking_json(report, tmp_path / "ranking.json")
    loaded = json.loads(path.read_text())
    assert set(loaded) == set(scores)  # the oracle is not a criterion of the table
    for criterion, entry in loaded.items():
        assert set(entry) == {"spearman_all_l2", "spearman_all_raw", "spearman_per_layer_mean", "amounts", "accuracy"}
        assert entry["spearman_all_l2"] == pytest.approx(table.loc[criterion, "all_layers_l2"])
        assert entry["amounts"] == [0.0, 0.5]
        assert all(0 <= a <= 1 for a in entry["accuracy"]) and entry["accuracy"][0] == 1.0


def test_ranking_json_refuses_bad_reports(tmp_path):
    good = {"taylor": {"spearman_all_l2": 0.5, "spearman_all_raw": 0.1, "spearman_per_layer_mean": 0.4,
                       "amounts": [0.0, 0.5], "accuracy": [0.9, 0.7]}}
    reports.write_ranking_json(good, tmp_path / "ok.json")
    bad_cases = [
        {"taylor": {k: v for k, v in good["taylor"].items() if k != "accuracy"}},
        {"taylor": {**good["taylor"], "accuracy": [90.0, 70.0]}},  # percent, not fractions
        {"taylor": {**good["taylor"], "amounts": [0.0]}},
        {"taylor": {**good["taylor"], "spearman_all_l2": 2.0}},
        {},
    ]
    for bad in bad_cases:
        with pytest.raises(ValueError, match="ranking report"):
            reports.write_ranking_json(bad, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()


# ---------------------------------------------------------------- the widget, without a browser
def test_widget_follows_the_controls(model, loader, scores):
    before = state(model)
    w = one_shot_widget(model, scores, loader, input_shape=INPUT, criterion="taylor", amount=0.5)
    assert ("taylor", 0.5) in w.results and "taylor" in w.summary.value  # drawn at build time
    w.slider.value = 0.25
    r = w.results[("taylor", 0.25)]
    assert f"{100 * r.accuracy:.1f}%" in w.summary.value and f"{r.filters_removed} of 18" in w.summary.value
    w.dropdown.value = "random"
    assert ("random", 0.25) in w.results and "random" in w.summary.value
    expected = oneshot.one_shot(model, scores["random"], 0.25, loader, input_shape=INPUT, criterion="random")
    assert w.results[("random", 0.25)] == expected
    assert_unchanged(model, before)
    with pytest.raises(ValueError, match="choose one of"):
        one_shot_widget(model, scores, loader, input_shape=INPUT, criterion="apoz")


def test_summary_and_chart(model, loader, scores):
    base = oneshot.one_shot(model, scores["taylor"], 0.0, loader, input_shape=INPUT)
    r = oneshot.one_shot(model, scores["taylor"], 0.5, loader, input_shape=INPUT, criterion="taylor")
    html = one_shot_summary(r, base)
    assert "9 of 18" in html and f"{r.params:,}" in html and f"{r.flops / 1e6:.1f}" in html
    from pruning_lib.plots.ranking import plot_one_shot
    fig = plot_one_shot(r)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [*r.kept.values(), *r.removed.values()]


def test_widget_reports_an_impossible_amount_instead_of_raising(model, loader, scores):
    w = one_shot_widget(model, scores, loader, input_shape=INPUT, amount=0.2, max_amount=0.95)
    w.slider.value = 0.95  # 17 of 18 filters: more than a floor of 1 per layer allows
    assert "cannot prune" in w.summary.value and "floor" in w.summary.value
    w.slider.value = 0.2
    assert "cannot prune" not in w.summary.value
