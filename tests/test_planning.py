"""Tests for pruning_lib.plan: global selection with floors, a per-layer cap, blocks, and checked inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pruning_lib.plan import layer_floors, plan_from_scores, plan_from_widths


def test_layer_floors_cap_the_share_of_each_layer():
    assert layer_floors({"a": 32, "b": 256}, max_fraction=0.9) == {"a": 4, "b": 26}   # ceil(0.1 * width)
    assert layer_floors({"a": 32, "b": 256}, min_keep=8, max_fraction=0.9) == {"a": 8, "b": 26}
    assert layer_floors({"a": 32}) == {"a": 1}
    with pytest.raises(ValueError, match="max_fraction"):
        layer_floors({"a": 4}, max_fraction=1.5)


def test_a_per_layer_cap_stops_global_selection_emptying_the_widest_layer():
    # the wide layer's scores are all below the narrow one's, as L2 normalisation makes them
    scores = {"narrow": torch.linspace(0.5, 1.0, 8), "wide": torch.full((64,), 0.1) + torch.linspace(0, 0.01, 64)}
    uncapped = plan_from_scores(scores, 40)
    assert len(uncapped["wide"]) == 40 and not uncapped["narrow"]
    floors = layer_floors({"narrow": 8, "wide": 64}, max_fraction=0.5)
    capped = plan_from_scores(scores, 36, min_keep=floors)
    assert len(capped["wide"]) == 32 and len(capped["narrow"]) == 4      # the rest comes from the other layer
    with pytest.raises(ValueError, match="each layer's floor"):
        plan_from_scores(scores, 37, min_keep=floors)


def test_numpy_and_list_scores_and_numpy_counts_are_accepted():
    torch_plan = plan_from_scores({"a": torch.tensor([3.0, 1.0, 2.0])}, 1)
    assert plan_from_scores({"a": np.array([3.0, 1.0, 2.0])}, np.int64(1)) == torch_plan == {"a": [1]}
    assert plan_from_scores({"a": [3.0, 1.0, 2.0]}, 1) == torch_plan


@pytest.mark.parametrize("num, words", [(True, "integer"), (2.0, "integer"), (np.float32(1), "integer")])
def test_bools_and_floats_are_not_counts(num, words):
    with pytest.raises(ValueError, match=words):
        plan_from_scores({"a": torch.tensor([3.0, 1.0, 2.0])}, num)
    with pytest.raises(ValueError, match="fraction"):
        plan_from_scores({"a": torch.tensor([3.0, 1.0, 2.0])}, fraction=True)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_scores_are_refused_naming_the_layer(bad):
    with pytest.raises(ValueError, match=r"scores\['features.3'\] has 1 non-finite"):
        plan_from_scores({"features.0": torch.tensor([1.0, 2.0]), "features.3": torch.tensor([1.0, bad])}, 1)


def test_plan_from_widths_removes_the_last_filters():
    assert plan_from_widths({"a": 4, "b": 3}, {"a": 2}) == {"a": [2, 3]}
    with pytest.raises(ValueError, match="lacks"):
        plan_from_widths({"a": 4}, {"z": 1})
    with pytest.raises(ValueError, match="keep 1..4"):
        plan_from_widths({"a": 4}, {"a": 0})
