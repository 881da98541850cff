"""Notebook 05's verdicts: the ResNet's targets with three outcomes and their noise, where the speedup falls short
of the FLOPs ratio (computed by hand from the per-layer times), and a generated paragraph that holds numbers and
the words the run chooses, never an explanation."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pruning_lib.course import narrate, resnet


def test_the_accuracy_target_is_judged_with_the_test_sets_noise():
    inside = resnet.check_resnet_targets(0.85, 0.845, flops_ratio=2.6, noise_points=0.7)     # 0.5 ± 0.7 against 1
    assert inside["points_lost"]["outcome"] == "within the noise" and inside["points_lost"]["met"] is False
    assert inside["flops_ratio"]["outcome"] == "met" and inside["flops_ratio"]["noise"] == 0.0    # counted: no noise
    gained = resnet.check_resnet_targets(0.8502, 0.8556, flops_ratio=2.57, noise_points=1.0)  # -0.54 ± 1.0: at most 0.46
    assert gained["points_lost"]["outcome"] == "met" and gained["points_lost"]["met"] is True
    lost = resnet.check_resnet_targets(0.85, 0.835, flops_ratio=2.4, noise_points=0.4)      # 1.5 ± 0.4: beyond 1
    assert {k: v["outcome"] for k, v in lost.items()} == {"flops_ratio": "missed", "points_lost": "missed"}


def gap_table(dense=(27.0, 23.5, 44.5), pruned=(15.0, 12.2, 17.3)) -> pd.DataFrame:
    """An `explain_gap` table by hand: total ms, ms of the layers with FLOPs, GFLOPs of the batch."""
    rows = {}
    for name, (total, flop_ms, gflops) in {"dense": dense, "taylor": pruned}.items():
        rows[name] = {"total_ms": total, "flop_layers_ms": flop_ms, "other_ms": total - flop_ms,
                      "other_share": (total - flop_ms) / total, "gflops": gflops, "gflop_per_s": gflops / (flop_ms / 1e3)}
    return pd.DataFrame.from_dict(rows, orient="index")


def test_the_shortfall_is_split_between_the_layers_with_and_without_flops():
    t = resnet.time_shortfall(gap_table())
    flops, conv, timed = 44.5 / 17.3, 23.5 / 12.2, 27.0 / 15.0
    assert (t["flops_ratio"], t["conv_speedup"], t["timed_speedup"]) == pytest.approx((flops, conv, timed))
    assert t["conv_part"] == pytest.approx(math.log(flops / conv) / math.log(flops / timed))
    assert 0.5 < t["conv_part"] < 1                      # here the thin convs are most of the shortfall
    # convs that keep their speed per FLOP: all of the shortfall is in the layers without FLOPs
    even = resnet.time_shortfall(gap_table(pruned=(15.0, 23.5 * 17.3 / 44.5, 17.3)))
    assert even["conv_part"] == pytest.approx(0.0, abs=1e-9)
    faster = resnet.time_shortfall(gap_table(pruned=(8.0, 7.0, 17.3)))       # faster than the FLOPs: no shortfall
    assert math.isnan(faster["conv_part"])


def report(outcome_lost="within the noise", stream=54.0, inside=43.0, time=None):
    checks = {"flops_ratio": {"required": ">= 2.5", "measured": 2.57, "noise": 0.0, "outcome": "met", "met": True},
              "points_lost": {"required": "<= 1", "measured": 0.5, "noise": 0.7, "outcome": outcome_lost,
                              "met": outcome_lost == "met"}}
    entry = {"mflops": 17.3, "speedup": 1.8}
    return {"targets": checks, "measurement": {"form": "deploy", "batch_size": 64, "num_threads": 1},
            "pruned": {"taylor": entry}, "dense": {"mflops": 44.5}, "headline": "taylor",
            "groups": {"kept_by_kind": {"residual stream": stream, "inside a block": inside}},
            **({"time": time} if time else {})}


def test_the_resnet_paragraph_holds_numbers_and_chosen_words_only():
    text = narrate.resnet(report(time=resnet.time_shortfall(gap_table())))
    assert "within the noise: points lost" in text and "± 0.70, the test set's noise: within it" in text
    assert "1.93× faster for 2.57× fewer FLOPs" in text and "all layers together 1.80×" in text
    assert "the layers with FLOPs account for" in text
    assert "The residual streams kept 54% of their channels, the groups inside blocks 43%" in text
    for explanation in ("so the loop spares it", "because", "whole stage"):     # the interpretation is the notebook's
        assert explanation not in text
    assert "did not spare" in narrate.resnet(report(stream=40.0, inside=60.0))
    assert "Both targets (FLOPs and accuracy) are met beyond the noise" in narrate.resnet(report("met"))
    missed = narrate.resnet(report("missed"))
    assert "Targets missed: points lost" in missed and "Timed layer by layer" not in missed
