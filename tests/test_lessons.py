"""Tests for the lessons (paired noise, verdicts, entries), lessons.json, the narrated conclusions and profile overrides."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pruning_lib.course import lessons, narrate, reports
from pruning_lib.course.profiles import FULL, QUICK, apply_overrides, get_profile, parse_overrides

from conftest import benchmark_module


def bits(pattern: str) -> torch.Tensor:
    return torch.tensor([float(c) for c in pattern])


# ---------------------------------------------------------------- paired noise and gaps
def test_noise_is_two_standard_errors_of_the_paired_difference():
    a, b = bits("1111011101"), bits("1011010100")
    d = (a - b).numpy()
    expected = 200 * d.std(ddof=1) / math.sqrt(len(d))      # written by hand: 2 SE of the mean difference, in points
    assert lessons.noise_points(a, b) == pytest.approx(expected)
    assert lessons.points(a) == pytest.approx(80.0)


def test_images_both_sides_agree_on_add_no_noise():
    same = bits("1101101")
    assert lessons.noise_points(same, same) == 0.0


def test_compare_computes_shows_from_gap_threshold_and_noise():
    n = 1000
    a = torch.ones(n)
    b = torch.ones(n)
    b[:50] = 0                                                   # a is 5 points ahead, on 50 images
    entry = lessons.compare("a beats b", {"a": a, "b": b}, threshold_points=2.0)
    assert entry["gap_points"] == pytest.approx(5.0) and entry["shows"] is True
    assert entry["measured"] == {"a": 100.0, "b": 95.0}
    assert lessons.compare("a beats b", {"a": a, "b": b}, threshold_points=6.0)["shows"] is False
    tiny = torch.ones(20)
    tiny_b = tiny.clone()
    tiny_b[:1] = 0                                               # 5 points on 20 images: inside the noise
    small = lessons.compare("a beats b", {"a": tiny, "b": tiny_b}, threshold_points=2.0)
    assert small["gap_points"] < small["noise_points"] and small["shows"] is False


@pytest.mark.parametrize("bad", [torch.tensor([0.5, 1.0]), torch.tensor([]), torch.tensor([2.0])])
def test_correctness_must_be_zeros_and_ones(bad):
    with pytest.raises(ValueError, match="0s and 1s"):
        lessons.points(bad)


def test_sides_on_different_images_are_refused():
    with pytest.raises(ValueError, match="different images"):
        lessons.noise_points(torch.ones(3), torch.ones(4))


def test_verdict_words_follow_the_numbers():
    assert lessons.verdict({"gap_points": 3.0, "noise_points": 1.0}).startswith("ahead by 3.0")
    assert lessons.verdict({"gap_points": -3.0, "noise_points": 1.0}).startswith("behind by 3.0")
    assert lessons.verdict({"gap_points": 0.5, "noise_points": 1.0}).startswith("tied")
    # a gap that rounds to the noise is written with two decimals, and says how close it is
    assert lessons.verdict({"gap_points": 0.98, "noise_points": 0.96}) == \
        "ahead by 0.98 points (noise ±0.96), just beyond the noise"
    assert lessons.verdict({"gap_points": 0.96, "noise_points": 0.98}).startswith("tied (+0.96 points")


def test_criteria_lesson_needs_the_gap_never_behind_and_the_best_rho():
    n = 400
    good, bad = torch.ones(n), torch.zeros(n)
    bad[: n // 2] = 1                                            # random at 50%
    curves = {"taylor": {0.2: good, 0.4: good}, "random": {0.2: bad, 0.4: bad}}
    entry = lessons.criteria_lesson(curves, {"taylor": 0.7, "l1": 0.3, "oracle": 1.0}, middle=0.4)
    assert entry["shows"] and entry["measured"]["best_rho"] == "taylor" and entry["gap_points"] == pytest.approx(50.0)
    worse_rho = lessons.criteria_lesson(curves, {"taylor": 0.2, "l1": 0.3}, middle=0.4)
    assert not worse_rho["shows"] and worse_rho["measured"]["best_rho"] == "l1"
    behind = lessons.criteria_lesson({"taylor": {0.2: bad, 0.4: good}, "random": {0.2: good, 0.4: bad}},
                                     {"taylor": 0.7}, middle=0.4)
    assert not behind["measured"]["never_behind"] and not behind["shows"]


def test_headline_is_judged_on_the_posts_claim_and_reports_flops_beside_it():
    dense, pruned = torch.ones(1000), torch.ones(1000)
    pruned[:5] = 0                                               # 0.5 points lost, noise ±0.45: lost < 1 beyond it
    ok = dict(flops_ratio=3.5, params_ratio=5.0)
    assert not lessons.headline_lesson(dense, pruned, **ok)["shows"]                        # no speedup yet
    assert lessons.headline_lesson(dense, pruned, **ok, speedup=3.0)["shows"]                # 3x faster measured
    assert lessons.headline_lesson(dense, pruned, **ok, speedup=2.9)["outcome"] == "missed"
    assert not lessons.headline_lesson(dense, pruned, flops_ratio=9.0, params_ratio=3.9, speedup=3)["shows"]
    fast = lessons.headline_lesson(dense, pruned, flops_ratio=9.0, params_ratio=5.0, speedup=3.15)
    assert fast["shows"] and fast["measured"]["speedup_per_flops"] == pytest.approx(0.35)    # reported, not judged
    assert set(fast["measured"]["checks"]) == {"speedup", "params_ratio", "points_lost"}
    lost = torch.ones(1000)
    lost[:20] = 0                                                # 2 points lost, noise ±0.9: beyond 1
    e = lessons.headline_lesson(dense, lost, **ok, speedup=3.0)
    assert e["gap_points"] == pytest.approx(2.0) and e["measured"]["checks"]["points_lost"] == "missed"
    assert e["outcome"] == "missed" and not e["shows"]


def test_a_gap_inside_the_noise_is_within_the_noise_not_met_or_missed():
    """Three outcomes: 1.02 points lost ± 0.7 against a limit of 1 is neither met nor missed; 0.56 ± 0.71 is not
    met either (its upper end is beyond the limit); a speedup of 3.02 ± 0.05 against 3 is within the noise."""
    assert lessons.against_limit(1.02, 0.7, 1.0, at_least=False) == "within the noise"
    assert lessons.against_limit(0.56, 0.71, 1.0, at_least=False) == "within the noise"
    assert lessons.against_limit(0.2, 0.71, 1.0, at_least=False) == "met"
    assert lessons.against_limit(1.8, 0.7, 1.0, at_least=False) == "missed"
    assert lessons.against_limit(3.02, 0.05, 3.0, at_least=True) == "within the noise"
    assert lessons.against_limit(3.1, 0.05, 3.0, at_least=True) == "met"
    assert lessons.against_limit(2.9, 0.05, 3.0, at_least=True) == "missed"
    dense, pruned = torch.ones(1000), torch.ones(1000)
    pruned[:10] = 0                                              # 1.0 point lost, noise ±0.63
    e = lessons.headline_lesson(dense, pruned, flops_ratio=5.0, params_ratio=5.0, speedup=3.5, speedup_noise=0.1)
    assert e["measured"]["checks"]["points_lost"] == "within the noise" and e["outcome"] == "within the noise"
    assert not e["shows"]
    assert lessons.overall(["met", "within the noise", "missed"]) == "missed"
    assert lessons.overall(["met", "met"]) == "met"


def test_a_speedup_measured_later_completes_the_headline_as_if_measured_at_once():
    dense, pruned = torch.ones(1000), torch.ones(1000)
    pruned[:5] = 0
    ok = dict(flops_ratio=3.5, params_ratio=5.0)
    without = lessons.headline_lesson(dense, pruned, **ok)
    for speedup, noise in ((2.0, 0.0), (3.0, 0.0), (3.05, 0.1)):          # below, at and around the post's 3x
        assert lessons.with_speedup(without, speedup, noise) == lessons.headline_lesson(
            dense, pruned, **ok, speedup=speedup, speedup_noise=noise)
    assert without["measured"]["speedup"] is None                # the entry given is not changed
    lost = torch.ones(1000)
    lost[:20] = 0
    assert not lessons.with_speedup(lessons.headline_lesson(dense, lost, **ok), 3.0)["shows"]   # 2 points lost


# ---------------------------------------------------------------- lessons.json
def entry(shows=True):
    a, b = torch.ones(100), torch.ones(100)
    b[:10] = 0
    e = lessons.compare("claim", {"a": a, "b": b}, threshold_points=2.0)
    e["shows"] = shows
    return e


def test_update_lessons_adds_and_replaces_entries(tmp_path):
    path = tmp_path / "lessons.json"
    reports.update_lessons({"one": entry()}, path)
    reports.update_lessons({"two": entry(False)}, path)
    report = reports.update_lessons({"one": entry(False)}, path)
    assert set(report) == {"one", "two"} and report["one"]["shows"] is False
    assert json.loads(path.read_text()) == json.loads(json.dumps(report))


def test_an_unreadable_lessons_file_is_replaced(tmp_path):
    path = tmp_path / "lessons.json"
    path.write_text("{ not json")
    assert set(reports.update_lessons({"one": entry()}, path)) == {"one"}


@pytest.mark.parametrize("bad", [{}, {"x": {"claim": "c"}}, {"x": {**entry(), "shows": "yes"}},
                                 {"x": {**entry(), "gap_points": "big"}}])
def test_lessons_validator_refuses_bad_entries(bad):
    with pytest.raises(ValueError, match="lessons report"):
        reports.validate_lessons(bad)


def test_infinite_noise_is_written_as_null(tmp_path):
    e = entry()
    e["noise_points"] = math.inf
    reports.update_lessons({"one": e}, tmp_path / "l.json")
    assert json.loads((tmp_path / "l.json").read_text())["one"]["noise_points"] is None


# ---------------------------------------------------------------- narrated conclusions
def test_the_prose_takes_its_words_from_the_entries():
    ahead, tied = entry(), entry(False)
    tied["gap_points"], tied["noise_points"] = 0.3, 1.0
    text = narrate.iterative({"too_much_at_once": tied, "pruning_beats_scratch": {**ahead, "measured": {"gap_3x_points": 4.0}}})
    assert "tied" in text and "does not show" in text and "ahead by 10.0" in text and "+4.0 points" in text
    assert narrate.shows({**ahead, "reported_only": True}) == "reported"


def test_profile_table_shows_only_the_fields_asked():
    table = narrate.profile_table(QUICK, ["seed", "train_images"])
    assert list(table.index) == ["seed", "train_images"]
    with pytest.raises(ValueError, match="not fields"):
        narrate.profile_table(QUICK, ["nope"])


# ---------------------------------------------------------------- overrides
def test_overrides_are_parsed_with_the_fields_types():
    p = apply_overrides(QUICK, "seed=3, finetune_steps=20,lr_schedule=constant,max_fraction=None,fraction_per_iteration=0.1")
    assert (p.seed, p.finetune_steps, p.lr_schedule, p.max_fraction, p.fraction_per_iteration) == (3, 20, "constant", None, 0.1)
    assert apply_overrides(FULL, "input_size=64").input_shape == (3, 64, 64)
    assert apply_overrides(QUICK, "") is QUICK and apply_overrides(QUICK, {"seed": 5}).seed == 5
    assert parse_overrides("threads=2")["threads"] == 2


@pytest.mark.parametrize("text, words", [("nope=1", "not a profile field"), ("seed=one", "not a valid int"),
                                         ("seed", "not name=value"), ("input_size=16", "at least 32"),
                                         ("lr=fast", "not a valid float")])
def test_bad_overrides_say_what_is_wrong(text, words):
    with pytest.raises(ValueError, match=words):
        apply_overrides(FULL, text)


def test_environment_overrides_apply_before_the_notebooks(monkeypatch):
    monkeypatch.setenv("PRUNING_OVERRIDES", "seed=7,finetune_steps=5")
    p = get_profile("quick", "finetune_steps=9")
    assert (p.seed, p.finetune_steps) == (7, 9)


def test_the_calibration_table_judges_the_headline_with_its_speed():
    dense, pruned = torch.ones(1000), torch.ones(1000)
    pruned[:5] = 0
    untimed = lessons.headline_lesson(dense, pruned, flops_ratio=5.0, params_ratio=5.0)
    seeds = [{"seed": 0, "lessons": {"headline": untimed}},
             {"seed": 1, "lessons": {"headline": lessons.with_speedup(untimed, 2.5)}},     # under the post's 3x
             {"seed": 2, "lessons": {"headline": lessons.with_speedup(untimed, 3.0)}}]     # 3x: 0.6 of the FLOPs ratio
    row = next(line for line in benchmark_module("calibrate_lessons").table(seeds).splitlines() if line.startswith("| headline"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert "not timed" in cells[1]
    assert cells[2].startswith("+0.5 ± ") and "✗" in cells[2] and "0.50" in cells[2] and "missed: speedup" in cells[2]
    assert "✓" in cells[3] and "0.60" in cells[3] and "missed" not in cells[3]    # the FLOPs ratio is reported, not judged
    assert cells[-1] == "no"                                    # seed 1 misses the speed                                    # seed 1 misses the speed


def _history(gflops, accuracy):
    import pandas as pd
    return pd.DataFrame({"gflops": gflops, "accuracy_after_finetune": accuracy, "params": [1.0] * len(gflops)})


def test_at_equal_flops_interpolates_both_runs_at_the_same_cost():
    a = _history([0.064, 0.032, 0.008], [0.86, 0.84, 0.80])
    b = _history([0.064, 0.016, 0.004], [0.86, 0.82, 0.70])
    table = lessons.at_equal_flops({"a": a, "b": b}, [32, 16, 5], n_images=400)
    assert list(table.index) == ["32 MFLOPs", "16 MFLOPs"]                 # 5 MFLOPs: run a never got there
    assert table.loc["32 MFLOPs", "a %"] == pytest.approx(84.0)
    assert table.loc["32 MFLOPs", "b %"] == pytest.approx(100 * (0.86 - 0.04 * 32 / 48))
    assert table.loc["16 MFLOPs", "a − b (points)"] == pytest.approx(100 * (0.84 - (0.04 * 16 / 24)) - 82.0)
    assert table.loc["16 MFLOPs", "noise (±points)"] == pytest.approx(
        200 * math.sqrt((table.loc["16 MFLOPs", "a %"] / 100 * (1 - table.loc["16 MFLOPs", "a %"] / 100) + 0.82 * 0.18) / 400))


def test_at_equal_flops_chooses_its_levels_for_any_network_size():
    big_a = _history([30.9, 12.0, 6.0], [0.95, 0.94, 0.90])                # VGG16-sized, in GFLOPs
    big_b = _history([30.9, 15.0, 5.0], [0.95, 0.93, 0.85])
    assert lessons.at_equal_flops({"a": big_a, "b": big_b}, [40, 20, 10, 5], n_images=100).empty   # MFLOPs of the quick VGG
    table = lessons.at_equal_flops({"a": big_a, "b": big_b}, None, n_images=100)
    costs = [float(at.split()[0]) for at in table.index]
    assert len(costs) >= 3 and costs == sorted(costs, reverse=True) and 6000 <= min(costs) and max(costs) <= 30900
