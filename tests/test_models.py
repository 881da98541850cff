"""Tests for pruning_lib.models: small_vgg, replace_head, freeze_features, vgg16 (offline)."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision
from torch import nn

import pruning_lib.models.vgg16 as vgg16_module
from pruning_lib.models import SmallVGG, freeze_features, replace_head, small_vgg
from pruning_lib.models.vgg16 import WeightsUnavailableError, vgg16

VGG16_URL = torchvision.models.VGG16_Weights.IMAGENET1K_V1.url


# --------------------------------------------------------------------------- small_vgg


@pytest.mark.parametrize(
    ("in_channels", "size", "num_classes"), [(1, 28, 10), (3, 32, 10), (3, 32, 2)]
)
def test_small_vgg_output_shape(in_channels, size, num_classes):
    torch.manual_seed(0)
    model = small_vgg(in_channels=in_channels, num_classes=num_classes)
    out = model(torch.randn(5, in_channels, size, size))
    assert out.shape == (5, num_classes)
    assert torch.isfinite(out).all()


def test_small_vgg_layout_matches_torchvision_vgg():
    model = small_vgg((8, "M", 16), in_channels=3, num_classes=4)
    assert isinstance(model, SmallVGG)
    kinds = [type(m) for m in model.features]
    assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    conv = model.features[0]
    assert conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.bias is None
    assert model.features[2].inplace
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d)
    assert [type(m) for m in model.classifier] == [nn.Linear]
    assert model.classifier[0].in_features == 16

    no_bn = small_vgg((8, "M", 16), batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in no_bn.features)
    assert no_bn.features[0].bias is not None


def test_small_vgg_parameter_count_by_hand():
    # Default: in=1, widths 32 32 M 64 64 M 128 128 M 256 M, BN (conv has no bias), 10 classes.
    convs = [(1, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128), (128, 256)]
    conv_params = sum(c_in * c_out * 3 * 3 for c_in, c_out in convs)  # 580_896
    bn_params = 2 * sum(c_out for _, c_out in convs)  # gamma and beta: 1_408
    head_params = 256 * 10 + 10  # 2_570
    assert conv_params + bn_params + head_params == 584_874
    model = small_vgg()
    assert sum(p.numel() for p in model.parameters()) == 584_874


def test_small_vgg_hidden_classifier():
    model = small_vgg((8, "M"), num_classes=3, hidden=12, dropout=0.25)
    kinds = [type(m) for m in model.classifier]
    assert kinds == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert model.classifier[0].in_features == 8 and model.classifier[0].out_features == 12
    assert model.classifier[2].p == 0.25
    assert model.classifier[3].out_features == 3
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_small_vgg_fx_traceable_and_equal():
    torch.manual_seed(0)
    model = small_vgg(in_channels=3).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(traced(x), model(x))
    ops = {n.op for n in traced.graph.nodes}
    assert "call_module" in ops


def test_small_vgg_is_seeded_and_config_rebuilds():
    torch.manual_seed(3)
    a = small_vgg(in_channels=3, hidden=16)
    torch.manual_seed(3)
    b = small_vgg(**a.config)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert a.config == {
        "widths": [32, 32, "M", 64, 64, "M", 128, 128, "M", 256, "M"],
        "in_channels": 3,
        "num_classes": 10,
        "batch_norm": True,
        "hidden": 16,
        "dropout": 0.0,
    }


def test_small_vgg_kaiming_init():
    torch.manual_seed(0)
    model = small_vgg((256, 256), in_channels=64)
    w = model.features[3].weight  # second conv: fan_out = 256 * 9
    expected_std = (2.0 / (256 * 9)) ** 0.5
    assert abs(w.std().item() - expected_std) / expected_std < 0.05


@pytest.mark.parametrize(
    ("widths", "match"),
    [
        ((32, 0, "M"), r"widths\[1\] = 0"),
        ((32, -4), r"widths\[1\] = -4"),
        ((32, "m"), r"widths\[1\] = 'm'"),
        ((32, 3.5), r"widths\[1\] = 3.5"),
        ((True,), r"widths\[0\] = True"),
        (("M", "M"), "no conv layer"),
        ((), "no conv layer"),
    ],
)
def test_small_vgg_rejects_bad_widths(widths, match):
    with pytest.raises(ValueError, match=match):
        small_vgg(widths)


def test_small_vgg_rejects_bad_arguments():
    with pytest.raises(TypeError, match="sequence"):
        small_vgg("32M")
    with pytest.raises(ValueError, match="num_classes"):
        small_vgg(num_classes=0)
    with pytest.raises(ValueError, match="in_channels"):
        small_vgg(in_channels=0)
    with pytest.raises(ValueError, match="dropout"):
        small_vgg(hidden=8, dropout=1.0)
    with pytest.raises(ValueError, match="hidden"):
        small_vgg(hidden=0)


# --------------------------------------------------------------------------- head and freezing


def test_replace_head():
    torch.manual_seed(0)
    model = small_vgg((8, "M", 16), hidden=12)
    old_first = model.classifier[0].weight.clone()
    old_head = model.classifier[-1]
    out = replace_head(model, 2)
    assert out is model
    head = model.classifier[-1]
    assert head is not old_head
    assert (head.in_features, head.out_features) == (12, 2)
    assert head.weight.dtype == old_head.weight.dtype
    assert torch.equal(model.classifier[0].weight, old_first)  # only the last Linear changes
    assert model.config["num_classes"] == 2
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 2)


def test_replace_head_keeps_dtype():
    model = small_vgg((8,)).to(torch.float64)
    replace_head(model, 5)
    assert model.classifier[-1].weight.dtype == torch.float64
    assert model(torch.randn(1, 1, 4, 4, dtype=torch.float64)).shape == (1, 5)


def test_replace_head_errors():
    with pytest.raises(TypeError, match="classifier"):
        replace_head(nn.Linear(3, 3), 2)
    with pytest.raises(ValueError, match="num_classes"):
        replace_head(small_vgg((8,)), 0)


def test_freeze_features():
    model = small_vgg((8, "M", 16))
    assert freeze_features(model) is model
    assert all(not p.requires_grad for p in model.features.parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())
    # Gradients reach only the classifier.
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    assert all(p.grad is None for p in model.features.parameters())
    assert all(p.grad is not None for p in model.classifier.parameters())

    freeze_features(model, frozen=False)
    assert all(p.requires_grad for p in model.parameters())


# --------------------------------------------------------------------------- vgg16 (offline)


def test_vgg16_random_init_builds():
    torch.manual_seed(0)
    model = vgg16(weights=None, num_classes=2)
    assert isinstance(model, torchvision.models.VGG)
    assert model.classifier[-1].out_features == 2
    assert sum(isinstance(m, nn.Conv2d) for m in model.features) == 13
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 2)


def test_vgg16_offline_error_names_url_and_fix(monkeypatch):
    calls = []

    def no_network(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    # torchvision's weights API calls the name it imported into torchvision.models._api.
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(WeightsUnavailableError) as info:
        vgg16("imagenet")
    message = str(info.value)
    assert calls == [VGG16_URL]
    assert VGG16_URL in message
    assert "failed" in message and "name resolution" in message
    assert "weights=" in message and torch.hub.get_dir() in message
    assert isinstance(info.value, RuntimeError)


@pytest.mark.parametrize("error", [OSError("Network is unreachable"), TimeoutError("timed out")])
def test_vgg16_offline_socket_errors(monkeypatch, error):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", fail)
    with pytest.raises(WeightsUnavailableError, match="vgg16-397923af.pth"):
        vgg16("imagenet")


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    """A random ImageNet-shaped (1000-class) VGG16 state dict saved like torchvision's file."""
    torch.manual_seed(0)
    model = torchvision.models.vgg16(weights=None)
    path = tmp_path_factory.mktemp("weights") / "vgg16-397923af.pth"
    torch.save(model.state_dict(), path)
    return path, {k: model.state_dict()[k].clone() for k in ("features.0.weight", "classifier.3.bias")}


def test_vgg16_local_weights_round_trip(vgg16_file):
    path, expected = vgg16_file
    model = vgg16(weights=path, num_classes=2)
    state = model.state_dict()
    for key, value in expected.items():
        assert torch.equal(state[key], value)
    assert model.classifier[-1].out_features == 2
    # num_classes=1000 keeps the file's (ImageNet) head; str paths work too.
    same = vgg16(weights=str(path), num_classes=1000)
    assert same.classifier[-1].out_features == 1000


def test_vgg16_missing_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth") as info:
        vgg16(weights=missing)
    assert VGG16_URL in str(info.value)


def test_vgg16_rejects_other_state_dicts(tmp_path):
    path = tmp_path / "small.pth"
    torch.save(small_vgg().state_dict(), path)
    with pytest.raises(ValueError, match="not a VGG16 state dict") as info:
        vgg16(weights=path)
    assert "features.1.running_mean" in str(info.value)  # small_vgg's BN keys are unexpected

    junk = tmp_path / "junk.pth"
    torch.save([1, 2, 3], junk)
    with pytest.raises(ValueError, match="not a VGG16 state dict"):
        vgg16(weights=junk)


def test_vgg16_does_not_download_for_paths_or_none(monkeypatch, tmp_path):
    def forbidden(*args, **kwargs):
        raise AssertionError("network used")

    monkeypatch.setattr(vgg16_module.torchvision.models._api, "load_state_dict_from_url", forbidden)
    with pytest.raises(FileNotFoundError):
        vgg16(weights=tmp_path / "absent.pth")
