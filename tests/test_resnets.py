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
from pruning_lib.groups import channel_groups
from pruning_lib.resnets import small_resnet
from pruning_lib.surgery import prune_filters
from test_zoo import zeroed_at_producers


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
    with torch.no_grad():
        want = zeroed_at_producers(model, groups, removed)(x)
        got = prune_filters(copy.deepcopy(model), removed)(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


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
    from pruning_lib.resnets import SmallResNet

    profile = apply_overrides(QUICK, "model=small_resnet")
    assert isinstance(experiment.architecture(profile), SmallResNet)
    assert experiment.baseline_path(profile).name == "quick_small_resnet_baseline.pt"
    assert experiment.baseline_path(QUICK).name == "quick_baseline.pt"
    source = experiment.source_model(profile)
    assert isinstance(source, SmallResNet) and source.classifier[-1].out_features == 2
    with pytest.raises(ValueError, match="not a model of the quick profile"):
        apply_overrides(QUICK, "model=resnet50")
