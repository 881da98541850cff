"""The small ResNet (notebook 05's network): its layout, its channel groups, exact pruning, its pretrained checkpoint."""

from __future__ import annotations

import copy

import pytest
import torch

from pruning_lib import models
from pruning_lib.checkpoints import load_checkpoint
from pruning_lib.course.datasets import SOURCE_CLASSES
from pruning_lib.course.source import SOURCE_CHECKPOINTS
from pruning_lib.data import fashion_mnist
from pruning_lib.graph.groups import channel_groups
from pruning_lib.models.resnets import small_resnet
from pruning_lib.surgery import prune_filters
from test_zoo import conv_widths, torch_pruned


def test_the_default_small_resnet():
    model = small_resnet(num_classes=8)
    assert 300_000 <= sum(p.numel() for p in model.parameters()) <= 700_000
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 8)
    assert small_resnet(**model.config).config == model.config
    with pytest.raises(ValueError, match="same length"):
        small_resnet((32, 64), (2,))


def test_each_stage_is_one_residual_group_and_each_first_conv_is_free():
    groups = channel_groups(small_resnet())
    assert not any(g.refused for g in groups.values())
    streams = {name: g.producers for name, g in groups.items() if len(g.producers) > 1}
    assert streams == {
        "features.0.0": ["features.0.0", "features.3.0.conv2.0", "features.3.1.conv2.0"],
        "features.4.0.shortcut.0": ["features.4.0.shortcut.0", "features.4.0.conv2.0", "features.4.1.conv2.0"],
        "features.5.0.shortcut.0": ["features.5.0.shortcut.0", "features.5.0.conv2.0", "features.5.1.conv2.0"],
    }
    assert sorted(n for n, g in groups.items() if len(g.producers) == 1) == [
        f"features.{s}.{b}.conv1.0" for s in (3, 4, 5) for b in (0, 1)]


def test_pruning_every_group_is_exact():
    torch.manual_seed(0)
    model = small_resnet().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2), m.bias.uniform_(-0.5, 0.5)
    groups = channel_groups(model)
    removed = {name: list(range(0, g.size, 3)) for name, g in groups.items()}
    x = torch.randn(3, 1, 28, 28)
    theirs = torch_pruned(model, removed, x)                    # Torch-Pruning's own dependency graph
    pruned = prune_filters(copy.deepcopy(model), removed)
    assert conv_widths(pruned) == conv_widths(theirs)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), theirs(x), atol=1e-5, rtol=1e-4)


def test_the_course_helpers_treat_it_like_the_vgg():
    model = models.replace_head(small_resnet(num_classes=8), 2)
    assert model.classifier[-1].out_features == 2 and model.config["num_classes"] == 2
    models.freeze_features(model)
    assert not any(p.requires_grad for p in model.features.parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())


def test_the_committed_source_resnet_knows_the_source_classes():
    model = small_resnet(num_classes=len(SOURCE_CLASSES))
    load_checkpoint(SOURCE_CHECKPOINTS["small_resnet"], model)
    test = fashion_mnist("test", SOURCE_CLASSES)           # the embedded subset's test images of those classes
    x, y = test.tensors
    with torch.no_grad():
        accuracy = float((model.eval()(x).argmax(1) == y).float().mean())
    assert accuracy > 0.9, accuracy


def test_the_quick_profile_runs_on_the_resnet_with_an_override():
    from pruning_lib.course import experiment
    from pruning_lib.course.profiles import QUICK, apply_overrides
    from pruning_lib.models.resnets import SmallResNet

    profile = apply_overrides(QUICK, "model=small_resnet")
    assert isinstance(experiment.architecture(profile), SmallResNet)
    assert experiment.baseline_path(profile).name == "quick_small_resnet_baseline.pt"
    assert experiment.baseline_path(QUICK).name == "quick_baseline.pt"
    source = experiment.source_model(profile)
    assert isinstance(source, SmallResNet) and source.classifier[-1].out_features == 2
    with pytest.raises(ValueError, match="not a model of the quick profile"):
        apply_overrides(QUICK, "model=resnet50")


# --------------------------------------------------------------------------- torchvision's ResNets (full profile)


def test_torchvision_resnets_in_the_small_resnets_layout():
    from pruning_lib.graph.groups import group_widths
    from pruning_lib.models.resnets import torchvision_resnet

    torch.manual_seed(0)
    model = torchvision_resnet("resnet18", weights=None, num_classes=2).eval()
    assert isinstance(model.classifier[0], torch.nn.Linear) and model.classifier[0].out_features == 2
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 2)
    widths = group_widths(model)
    assert len(widths) == 12 and sum(widths.values()) == 2880      # 4 streams + 8 first convs of basic blocks
    models.freeze_features(model)
    assert all(p.requires_grad for p in model.classifier.parameters())
    with pytest.raises(ValueError, match="resnet18"):
        torchvision_resnet("resnet7", weights=None)
    bottlenecks = torchvision_resnet("resnet50", weights=None, num_classes=2).eval()
    widths = group_widths(bottlenecks)   # the stem (its 64 channels go to a 1x1 downsample, not into a sum), 4 streams,
    assert len(widths) == 1 + 4 + 2 * 16 and bottlenecks(torch.randn(1, 3, 64, 64)).shape == (1, 2)   # 2 free per block


def test_torchvision_resnet_weights_from_a_file_and_clear_errors(tmp_path, monkeypatch):
    import torchvision
    import urllib.error

    from pruning_lib.models.pretrained import WeightsUnavailableError
    from pruning_lib.models.resnets import TORCHVISION_RESNETS, torchvision_resnet

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(reference.state_dict(), path)
    model = torchvision_resnet("resnet18", weights=path, num_classes=1000).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
    assert torchvision_resnet("resnet18", weights=str(path)).classifier[0].out_features == 2

    with pytest.raises(FileNotFoundError, match="resnet18 weights file not found"):
        torchvision_resnet("resnet18", weights=tmp_path / "nope.pth")
    wrong = tmp_path / "small.pth"
    torch.save(small_resnet().state_dict(), wrong)
    with pytest.raises(ValueError, match="not a resnet18 state dict"):
        torchvision_resnet("resnet18", weights=wrong)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        torchvision_resnet("resnet50", weights="imagenet")
    assert TORCHVISION_RESNETS["resnet50"].url in str(info.value) and "name resolution" in str(info.value)


def test_the_full_profile_builds_its_resnets(tmp_path, monkeypatch):
    import torchvision

    from pruning_lib.course import experiment, preflight
    from pruning_lib.course.profiles import FULL, apply_overrides

    profile = apply_overrides(FULL, "model=resnet18,input_size=64")
    assert experiment.baseline_path(profile).name == "full_resnet18_baseline.pt"
    assert experiment.pruned_path("taylor", profile).name == "full_resnet18_pruned_taylor.pt"
    assert experiment.weights_variable("resnet18") == "PRUNING_RESNET18_WEIGHTS"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.delenv("PRUNING_RESNET18_WEIGHTS", raising=False)
    check = preflight._weights_check(profile)
    assert not check.ok and "resnet18-f37072fd.pth" in check.fix and "PRUNING_RESNET18_WEIGHTS" in check.fix
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    monkeypatch.setenv("PRUNING_RESNET18_WEIGHTS", str(path))
    assert preflight._weights_check(profile).ok
    source = experiment.source_model(profile)
    assert source.classifier[0].out_features == 2 and source.config["arch"] == "resnet18"


# --------------------------------------------------------------------------- notebook 05's helpers


def _trained_like():
    torch.manual_seed(0)
    model = small_resnet(num_classes=2).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2), m.bias.uniform_(-0.5, 0.5)
    return model


def test_group_table_kinds_and_the_naive_surgery_target():
    from pruning_lib.course import resnet

    model = _trained_like()
    groups = channel_groups(model)
    table = resnet.group_table(groups)
    assert table["kind"].value_counts().to_dict() == {"inside a block": 6, "residual stream": 3}
    assert table.loc["features.0.0", "readers"] == 4 and table["channels"].sum() == 672
    assert resnet.block_last_conv(model, groups) == ("features.3.0.conv2.0", "features.3.0.conv2.1")
    kept = resnet.kept_by_kind(groups, {g.name: g.size // 2 for g in groups.values()})
    assert kept["% kept"].tolist() == [50.0, 50.0] and kept["channels"].sum() == 672
    cost = resnet.cost_by_kind(groups, {g.name: (2.0 if len(g.producers) > 1 else 1.0) for g in groups.values()})
    assert cost.to_dict() == {"inside a block": 1.0, "residual stream": 2.0}


def test_masking_a_groups_batchnorms_is_what_pruning_it_computes():
    """Notebook 05's masked network (`mask_group_channels`) and our surgery both compute what Torch-Pruning's
    removal of the same channels computes (an independent dependency graph)."""
    from pruning_lib.course import resnet

    model = _trained_like()
    groups = channel_groups(model)
    gen = torch.Generator().manual_seed(3)
    plan = {g.name: sorted(torch.randperm(g.size, generator=gen)[: g.size // 3].tolist()) for g in groups.values()}
    x = torch.randn(4, 1, 28, 28, generator=gen)
    theirs = torch_pruned(model, plan, x)
    with torch.no_grad():
        want = theirs(x)
        masked = resnet.mask_group_channels(copy.deepcopy(model), groups, plan)(x)
        got = prune_filters(copy.deepcopy(model), plan)(x)
        unmasked = model(x)
    torch.testing.assert_close(masked, want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(unmasked, want, atol=1e-3)


def test_the_targets_and_reports_resnet_json(tmp_path, monkeypatch):
    import pandas as pd

    from pruning_lib.course import demo, narrate, resnet

    checks = resnet.check_resnet_targets(0.85, 0.835, flops_ratio=3.0)
    assert {k: v["met"] for k, v in checks.items()} == {"flops_ratio": True, "points_lost": False}
    assert abs(checks["points_lost"]["measured"] - 1.5) < 1e-9
    table = pd.DataFrame({"accuracy": [0.85, 0.835], "gflops": [0.045, 0.015], "params": [700_000, 200_000],
                          "size_mb": [2.8, 0.8], "latency_ms": [14.0, 6.0], "speedup": [1.0, 14 / 6]},
                         index=pd.Index(["dense", "taylor"], name="model"))
    report = resnet.resnet_report("quick", "small_resnet", table, checks=checks,
                                  groups={"count": 9, "kept_by_kind": {"inside a block": 70.0, "residual stream": 50.0}},
                                  measurement={"batch_size": 64, "num_threads": 1, "form": "deploy"})
    assert report["all_met"] is False and report["pruned"]["taylor"]["mflops"] == pytest.approx(15.0)
    path = resnet.write_resnet_json(report, tmp_path / "resnet.json")
    assert resnet.read_resnet_report(path)["targets"]["points_lost"]["met"] is False
    assert report["pruned"]["taylor"]["speedup_per_flops"] == pytest.approx((14 / 6) / 3.0)
    text = narrate.resnet(report)
    assert "3.00× fewer FLOPs" in text and "Targets missed: points lost" in text and "a measure, not a target" in text and "did not spare" in text
    with pytest.raises(ValueError, match="not a ResNet report"):
        resnet.write_resnet_json({"dense": {}}, tmp_path / "bad.json")
    monkeypatch.setenv("PRUNING_REPORTS_DIR", str(tmp_path))
    lines = demo.resnet_lines()                                      # what make demo prints
    assert lines[0].startswith("model=small_resnet") and lines[2].startswith("dense") and "NOT met" in lines[-1]
    (tmp_path / "resnet.json").unlink()
    assert "notebook 05 writes it" in demo.resnet_lines()[0]


def test_one_shot_prunes_a_resnet_by_groups():
    from pruning_lib.rank.criteria import rank_filters
    from pruning_lib.recover.oneshot import one_shot

    model = _trained_like()
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 2, (32,))
    scores = rank_filters(model, [(x, y)], "l1")
    result = one_shot(model, scores, 0.3, [(x, y)], input_shape=(1, 28, 28), criterion="l1")
    assert set(result.kept) == set(scores) and result.filters_total == 672
    assert result.filters_removed == round(0.3 * 672) and sum(result.removed.values()) == result.filters_removed
    assert all(result.kept[g] + result.removed[g] == len(scores[g]) for g in scores)


def test_the_one_shot_widget_over_a_resnets_groups():
    from pruning_lib.rank.criteria import rank_filters
    from pruning_lib.recover.iterative import fingerprint
    from pruning_lib.widgets.oneshot import one_shot_widget

    model = _trained_like()
    before = fingerprint(model)
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 2, (32,))
    scores = {c: rank_filters(model, [(x, y)], c) for c in ("taylor", "random")}
    w = one_shot_widget(model, scores, [(x, y)], input_shape=(1, 28, 28), amount=0.3, max_amount=0.8)
    assert "202 of 672" in w.summary.value                               # round(0.3 * 672) group channels
    w.slider.value = 0.5
    assert ("taylor", 0.5) in w.results and "336 of 672" in w.summary.value
    w.dropdown.value = "random"
    r = w.results[("random", 0.5)]
    assert set(r.kept) == set(scores["random"]) and sum(r.removed.values()) == 336
    assert fingerprint(model) == before                                  # the widget prunes copies only
