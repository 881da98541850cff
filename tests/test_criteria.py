"""Each criterion computes exactly the formula it names; ranking has no side effects."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning_lib.rank.criteria import CRITERIA, rank_all, rank_filters
from pruning_lib.rank.oracle import oracle, spearman, spearman_table
from pruning_lib.surgery import prune_filters


def tiny(inplace=False, bn=True):
    torch.manual_seed(0)
    layers = [nn.Conv2d(2, 4, 3, padding=1)]
    layers += [nn.BatchNorm2d(4)] if bn else []
    layers += [nn.ReLU(inplace=inplace), nn.MaxPool2d(2), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(inplace=inplace),
               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)]
    model = nn.Sequential(*layers)
    if bn:
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 1.5)
    return model.eval()


def batches(n_batches=3, size=6, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 2, 8, 8, generator=gen), torch.randint(0, 3, (size,), generator=gen))
            for _ in range(n_batches)]


def maps_by_hand(model, x):
    """The maps z1, z2 after each conv's BatchNorm and ReLU, what the next layers read (r1, r2), and the output,
    computed without hooks."""
    z1 = F.relu(model[1](model[0](x)))
    r1 = F.max_pool2d(z1, 2)
    z2 = F.relu(model[4](r1))
    r2 = torch.flatten(F.adaptive_avg_pool2d(z2, 1), 1)
    return z1, z2, r1, r2, model[8](r2)


def _activation_statistics(values):
    """Mean, population s.d. and 1 − APoZ of each channel over every value of its maps, (C, I) -> three (C,)."""
    return {"mean_activation": values.mean(dim=1), "std_activation": values.std(dim=1, unbiased=False),
            "apoz": 1 - (values == 0).float().mean(dim=1)}


def hand_scores(model, data):
    """Every data criterion from its formula, by hand: Taylor (Eq. 8) on each conv's map z with each example's
    own loss; the activation statistics on z (the ReLU's output, before pooling: the papers' definitions) and, under
    their ``_at_readers`` names, on what the next layer reads (after the pooling)."""
    per_example_taylor = {"0": [], "4": []}
    maps = {"0": [], "4": []}
    read = {"0": [], "4": []}
    for x, y in data:
        z1, z2, r1, r2, out = maps_by_hand(model, x)
        g1, g2 = torch.autograd.grad(F.cross_entropy(out, y, reduction="sum"), [z1, z2])   # ∂ℓ_n/∂z per example
        for name, z, g, r in (("0", z1, g1, r1), ("4", z2, g2, r2)):
            per_example_taylor[name].append((g * z).mean(dim=(2, 3)).abs())  # |mean_hw(dℓ/dz * z)|, (N, C)
            maps[name].append(z.detach().reshape(len(z), z.shape[1], -1))
            read[name].append(r.detach().reshape(len(r), r.shape[1], -1))
    result = {}
    for name in ("0", "4"):
        z = torch.cat(maps[name]).transpose(0, 1).flatten(1)  # (C, N*positions)
        r = torch.cat(read[name]).transpose(0, 1).flatten(1)
        result[name] = {"taylor": torch.cat(per_example_taylor[name]).mean(dim=0), **_activation_statistics(z),
                        **{f"{c}_at_readers": v for c, v in _activation_statistics(r).items()}}
    return result


DATA_CRITERIA = ["taylor", "mean_activation", "std_activation", "apoz", "mean_activation_at_readers",
                 "std_activation_at_readers", "apoz_at_readers"]


@pytest.mark.parametrize("criterion", DATA_CRITERIA)
def test_data_criteria_match_their_formulas(criterion):
    model, data = tiny(), batches()
    expected = hand_scores(model, data)
    got = rank_filters(model, data, criterion, normalize=None)
    assert list(got) == ["0", "4"]
    for name in got:
        assert got[name].dtype == torch.float32 and got[name].device.type == "cpu"
        torch.testing.assert_close(got[name], expected[name][criterion].float(), rtol=1e-4, atol=1e-7)


def test_mean_activation_and_apoz_are_those_of_the_relu_map_not_of_the_pooled_one():
    """Mean activation and APoZ by hand on a chain with max pooling (conv 0) and a global average pool (conv 4):
    the papers' statistics of the ReLU's output.  The same statistics after the pooling are different numbers (the
    max-pooled mean is larger; after the global pool a channel's share of zeros is 0 or 1 per example)."""
    model, data = tiny(), batches()
    z = {"0": [], "4": []}
    with torch.no_grad():
        for x, _ in data:
            z1 = torch.clamp(model[1](model[0](x)), min=0)                     # ReLU by hand
            z2 = torch.clamp(model[4](F.max_pool2d(z1, 2)), min=0)
            z["0"].append(z1), z["4"].append(z2)
    got = rank_all(model, data, ["mean_activation", "apoz", "mean_activation_at_readers", "apoz_at_readers"],
                   normalize=None)
    for name, maps in z.items():
        maps = torch.cat(maps)                                                    # (N, C, H, W)
        mean = maps.sum(dim=(0, 2, 3)) / (maps.shape[0] * maps.shape[2] * maps.shape[3])
        zeros = (maps == 0).sum(dim=(0, 2, 3)) / (maps.shape[0] * maps.shape[2] * maps.shape[3])
        torch.testing.assert_close(got["mean_activation"][name], mean, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(got["apoz"][name], 1 - zeros, rtol=1e-5, atol=1e-7)
        assert 0 < float(zeros.min()) and float(zeros.max()) < 1                  # a ReLU map: some zeros, not all
    assert (got["mean_activation_at_readers"]["0"] > got["mean_activation"]["0"]).all()     # max pooling's maxima
    pooled = torch.cat([F.adaptive_avg_pool2d(m, 1) for m in z["4"]]).flatten(1)  # (N, C) after the global pool
    torch.testing.assert_close(got["apoz_at_readers"]["4"], 1 - (pooled == 0).float().mean(0))


def test_taylor_takes_abs_per_example_not_of_the_mean():
    model, data = tiny(), batches()
    got = rank_filters(model, data, "taylor", normalize=None)["0"]
    x = torch.cat([b[0] for b in data])
    signed = []
    for xb, yb in data:
        z1, _, _, _, out = maps_by_hand(model, xb)
        (g1,) = torch.autograd.grad(F.cross_entropy(out, yb, reduction="sum"), [z1])
        signed.append((g1 * z1).mean(dim=(2, 3)))
    abs_of_mean = torch.cat(signed).mean(dim=0).abs()
    assert len(x) == 18 and not torch.allclose(got, abs_of_mean.float())


@pytest.mark.parametrize("criterion, norm", [("l1", lambda w: w.abs().sum(dim=(1, 2, 3))),
                                             ("l2", lambda w: w.pow(2).sum(dim=(1, 2, 3)).sqrt())])
def test_weight_criteria(criterion, norm):
    model = tiny()
    got = rank_filters(model, None, criterion, normalize=None)
    torch.testing.assert_close(got["0"], norm(model[0].weight.detach()))
    torch.testing.assert_close(got["4"], norm(model[4].weight.detach()))


def test_random_is_seeded():
    model = tiny()
    a, b = rank_filters(model, None, "random", seed=3), rank_filters(model, None, "random", seed=3)
    c = rank_filters(model, None, "random", seed=4)
    assert all(torch.equal(a[n], b[n]) for n in a) and not torch.equal(a["4"], c["4"])


def test_l2_normalisation_is_per_layer():
    model, data = tiny(), batches()
    raw = rank_filters(model, data, "taylor", normalize=None)
    normed = rank_filters(model, data, "taylor")
    for name in raw:
        torch.testing.assert_close(normed[name], raw[name] / raw[name].norm())
        assert normed[name].norm() == pytest.approx(1.0)


@pytest.mark.parametrize("criterion", sorted(CRITERIA))
def test_inplace_relu_gives_same_scores(criterion):
    data = batches()
    a = rank_filters(tiny(inplace=False), data, criterion, normalize=None)
    b = rank_filters(tiny(inplace=True), data, criterion, normalize=None)
    for name in a:
        torch.testing.assert_close(a[name], b[name])


def test_taylor_works_with_frozen_layers():
    data = batches()
    model = tiny(inplace=True)
    expected = rank_filters(model, data, "taylor")
    for p in model.parameters():
        p.requires_grad_(False)
    got = rank_filters(model, data, "taylor")
    for name in got:
        torch.testing.assert_close(got[name], expected[name])


def _state(model):
    return ({k: v.clone() for k, v in model.state_dict().items()}, model.training,
            [(m._forward_hooks.copy(), m._forward_pre_hooks.copy()) for m in model.modules()])


@pytest.mark.parametrize("train_mode", [True, False])
def test_ranking_has_no_side_effects(train_mode):
    model = tiny(inplace=True).train(train_mode)
    weights, mode, hooks = _state(model)
    rank_all(model, batches(), sorted(CRITERIA))
    oracle(model, batches(1), progress=False)
    after, mode_after, hooks_after = _state(model)
    assert all(torch.equal(weights[k], after[k]) for k in weights)  # BN running stats too
    assert mode_after == mode and all(h == g for h, g in zip(hooks, hooks_after))
    assert all(p.grad is None for p in model.parameters())


def test_hooks_removed_and_mode_restored_on_error():
    model = tiny().train()

    def broken_loss(out, y):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        rank_filters(model, batches(), "taylor", loss_fn=broken_loss)
    assert model.training and all(not m._forward_hooks for m in model.modules())


def test_unknown_criterion_lists_valid_ones():
    with pytest.raises(ValueError, match="taylor"):
        rank_filters(tiny(), batches(), "weight_magnitude")
    with pytest.raises(ValueError, match="need batches"):
        rank_filters(tiny(), None, "apoz")


def test_oracle_equals_loss_change_of_real_removal():
    model, data = tiny(), batches(2)
    got = oracle(model, data, progress=False)
    x = torch.cat([b[0] for b in data])
    y = torch.cat([b[1] for b in data])
    with torch.no_grad():
        base = F.cross_entropy(model(x), y)
        for name, n in (("0", 4), ("4", 5)):
            expected = torch.stack([
                (F.cross_entropy(prune_filters(copy.deepcopy(model), {name: [k]})(x), y) - base).abs()
                for k in range(n)])
            torch.testing.assert_close(got[name], expected, rtol=1e-4, atol=1e-6)


def test_spearman_on_constructed_rankings():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(2000, generator=gen)
    assert spearman(a, a * 3 + 1) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert abs(spearman(a, torch.rand(2000, generator=gen))) < 0.1
    with pytest.raises(ValueError, match="length"):
        spearman(a, a[:5])


def test_spearman_table_layout_and_normalisation_effect():
    # oracle: layer "a" has big values, layer "b" small ones; within each layer the criterion is perfect
    oracle_scores = {"a": torch.tensor([10.0, 20, 30, 40]), "b": torch.tensor([1.0, 2, 3, 4])}
    perfect = {"a": torch.tensor([1.0, 2, 3, 4]), "b": torch.tensor([10.0, 20, 30, 40])}  # scales swapped
    reversed_ = {n: -s for n, s in oracle_scores.items()}
    table = spearman_table({"perfect": perfect, "reversed": reversed_}, oracle_scores)
    assert list(table.columns) == ["a", "b", "per_layer_mean", "all_layers_raw", "all_layers_l2"]
    assert table.loc["perfect", "a"] == pytest.approx(1) and table.loc["perfect", "per_layer_mean"] == pytest.approx(1)
    assert table.loc["perfect", "all_layers_raw"] < 0  # the un-normalised scales point the wrong way
    assert table.loc["perfect", "all_layers_l2"] > table.loc["perfect", "all_layers_raw"]
    assert table.loc["reversed", "per_layer_mean"] == pytest.approx(-1)


def test_random_is_uniform_over_all_filters_not_normalised():
    model = tiny()
    normed = rank_filters(model, None, "random", seed=5)
    raw = rank_filters(model, None, "random", seed=5, normalize=None)
    assert all(torch.equal(normed[n], raw[n]) for n in raw)
    assert all(((s >= 0) & (s < 1)).all() for s in raw.values())


def test_a_sampled_oracle_measures_only_its_sample_and_spearman_skips_the_rest():
    from pruning_lib.rank.oracle import oracle as full_oracle

    model = tiny()
    data = list(batches())
    every = full_oracle(model, data, progress=False)
    sampled = full_oracle(model, data, sample_per_layer=2, seed=1, progress=False)
    for name, scores in sampled.items():
        measured = ~torch.isnan(scores)
        assert int(measured.sum()) == min(2, len(scores))
        torch.testing.assert_close(scores[measured], every[name][measured])
    a = torch.tensor([1.0, 2.0, float("nan"), 4.0])
    assert spearman(a, torch.tensor([1.0, 2.0, 3.0, 5.0])) == pytest.approx(1.0)
