"""Tests for pruning_lib.bench: counts against hand formulas, timing hygiene, comparisons."""
import math

import pytest
import torch
from torch import nn

from pruning_lib import measure

FAST = 0.05  # min_run_time (s) for timing tests


def tiny_cnn(width: int = 8) -> nn.Sequential:
    """conv(3->width, 3x3, pad 1) -> BN -> ReLU -> conv(width->2*width) -> GAP -> linear(2*width->10)."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, 10),
    )


# --------------------------------------------------------------------------- parameters / size


def test_count_parameters_matches_hand_count():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 2 * 2, 5))
    conv = 4 * 3 * 3 * 3 + 4  # weights + bias
    linear = 16 * 5 + 5
    assert measure.count_parameters(model) == conv + linear


def test_count_parameters_counts_shared_and_frozen_once():
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, lin)
    lin.requires_grad_(False)
    assert measure.count_parameters(model) == 4 * 4 + 4


def test_size_on_disk_is_about_four_bytes_per_float32_param():
    model = nn.Linear(300, 200)  # 60_200 params -> 0.2408 MB of raw float32
    raw_mb = 4 * measure.count_parameters(model) / 1e6
    size = measure.size_on_disk_mb(model)
    assert raw_mb < size < raw_mb + 0.01  # only a small pickle/zip overhead on top


# --------------------------------------------------------------------------- FLOPs


@pytest.mark.parametrize("bias", [True, False])
def test_conv_flops_match_hand_formula_and_ignore_bias(bias):
    cin, cout, k, h, w, stride, pad = 3, 8, 3, 11, 9, 2, 1
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=bias)
    hout = (h + 2 * pad - k) // stride + 1
    wout = (w + 2 * pad - k) // stride + 1
    expected = 2 * cout * cin * k * k * hout * wout  # bias adds are not counted
    assert measure.count_flops(conv, (1, cin, h, w)) == expected
    assert measure.count_macs(conv, (1, cin, h, w)) == expected // 2


def test_grouped_conv_flops_divide_by_groups():
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=4)
    assert measure.count_flops(conv, (1, 8, 5, 5)) == 2 * 8 * (8 // 4) * 9 * 25


@pytest.mark.parametrize("bias", [True, False])
def test_linear_flops_match_hand_formula_and_scale_with_batch(bias):
    lin = nn.Linear(7, 5, bias=bias)
    assert measure.count_flops(lin, (1, 7)) == 2 * 7 * 5
    assert measure.count_flops(lin, (3, 7)) == 3 * 2 * 7 * 5


def test_flops_per_layer_lists_leaf_modules_and_sums_to_total():
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    df = measure.flops_per_layer(model, (1, 3, 6, 6))
    assert list(df.columns) == ["module", "type", "flops", "params"]
    assert list(df["module"]) == ["0.0", "2"]  # ReLU/Flatten have no FLOPs; no parent rows
    assert list(df["type"]) == ["Conv2d", "Linear"]
    assert list(df["flops"]) == [2 * 4 * 3 * 9 * 36, 2 * 144 * 2]
    assert list(df["params"]) == [4 * 3 * 9 + 4, 144 * 2 + 2]
    assert df["flops"].sum() == measure.count_flops(model, (1, 3, 6, 6))


def test_flops_per_layer_on_a_leaf_model():
    df = measure.flops_per_layer(nn.Linear(3, 2), (1, 3))
    assert df.to_dict("records") == [{"module": "", "type": "Linear", "flops": 12, "params": 8}]


def test_count_flops_restores_each_submodule_mode():
    model = tiny_cnn().train()
    model[1].eval()  # a frozen BatchNorm inside a training model must stay frozen
    measure.count_flops(model, (1, 3, 8, 8))
    assert model.training and model[0].training and not model[1].training


@pytest.mark.parametrize("shape", [[1, 3, 8], (1.0, 3), (0, 3), (3,), "1,3", (1, True)])
def test_bad_input_shape_is_named(shape):
    if isinstance(shape, list):  # lists are accepted
        assert measure.count_flops(nn.Conv1d(3, 2, 3), shape) == 2 * 2 * 3 * 3 * 6
        return
    with pytest.raises(ValueError, match="input_shape"):
        measure.count_flops(nn.Linear(3, 2), shape)


# --------------------------------------------------------------------------- latency


class GradProbe(nn.Module):
    """Records whether grad mode and training mode were on during each forward pass."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.seen = set()

    def forward(self, x):
        self.seen.add((torch.is_grad_enabled(), self.training))
        return self.lin(x)


def test_measure_latency_reports_and_restores_state():
    model = GradProbe().train()
    threads_before = torch.get_num_threads()
    other = 1 if threads_before != 1 else 2
    out = measure.measure_latency(model, (4, 4), num_threads=other, min_run_time=FAST, warmup=2)
    assert out["median_ms"] > 0 and out["mean_ms"] > 0 and out["iqr_ms"] >= 0
    assert out["runs"] >= 1
    assert out["batch_size"] == 4 and out["num_threads"] == other and out["device"] == "cpu"
    assert out["throughput"] == pytest.approx(4 / (out["median_ms"] / 1e3))
    assert torch.get_num_threads() == threads_before
    assert model.training
    assert model.seen == {(False, False)}  # every pass: no grad, eval mode


def test_measure_latency_default_threads_is_current():
    out = measure.measure_latency(nn.Linear(4, 4), (1, 4), min_run_time=FAST)
    assert out["num_threads"] == torch.get_num_threads()


def test_measure_latency_rejects_wrong_device_and_bad_args():
    with pytest.raises(ValueError, match="model.to"):
        measure.measure_latency(nn.Linear(4, 4), (1, 4), device="meta", min_run_time=FAST)
    with pytest.raises(ValueError, match="num_threads"):
        measure.measure_latency(nn.Linear(4, 4), (1, 4), num_threads=0)
    with pytest.raises(ValueError, match="min_run_time"):
        measure.measure_latency(nn.Linear(4, 4), (1, 4), min_run_time=0)


def test_profile_reports_per_image_gflops_and_batch_latency():
    model = tiny_cnn()
    p = measure.profile(model, (4, 3, 8, 8), min_run_time=FAST)
    assert p["params"] == measure.count_parameters(model)
    assert p["gflops"] == measure.count_flops(model, (1, 3, 8, 8)) / 1e9
    assert p["latency"]["batch_size"] == 4
    assert p["latency_ms"] == p["latency"]["median_ms"] > 0
    assert p["throughput"] == p["latency"]["throughput"]


# --------------------------------------------------------------------------- compare


def test_compare_ratios_relative_to_reference():
    torch.manual_seed(0)
    models = {"wide": tiny_cnn(16), "narrow": tiny_cnn(8)}
    df = measure.compare(models, (1, 3, 8, 8), min_run_time=FAST, accuracy={"wide": 0.9})
    assert list(df.index) == ["wide", "narrow"]
    assert list(df.columns) == ["params", "size_mb", "gflops", "latency_ms", "latency_iqr_ms",
                                "throughput", "speedup", "size_ratio", "flops_ratio",
                                "params_ratio", "accuracy"]
    ratios = ["speedup", "size_ratio", "flops_ratio", "params_ratio"]
    assert (df.loc["wide", ratios] == 1.0).all()
    narrow = df.loc["narrow"]
    assert narrow["flops_ratio"] > 1 and narrow["params_ratio"] > 1 and narrow["size_ratio"] > 1
    assert narrow["params_ratio"] == measure.count_parameters(models["wide"]) / narrow["params"]
    assert df.loc["wide", "accuracy"] == 0.9 and math.isnan(narrow["accuracy"])


def test_compare_with_explicit_reference():
    models = {"wide": tiny_cnn(16), "narrow": tiny_cnn(8)}
    df = measure.compare(models, (1, 3, 8, 8), reference="narrow", min_run_time=FAST)
    assert df.loc["narrow", "flops_ratio"] == 1.0
    assert df.loc["wide", "flops_ratio"] < 1


def test_compare_rejects_empty_and_unknown_names():
    with pytest.raises(ValueError, match="non-empty"):
        measure.compare({}, (1, 3, 8, 8))
    with pytest.raises(ValueError, match="'nope'"):
        measure.compare({"a": tiny_cnn()}, (1, 3, 8, 8), reference="nope")
    with pytest.raises(ValueError, match="accuracy"):
        measure.compare({"a": tiny_cnn()}, (1, 3, 8, 8), accuracy={"b": 0.5})
    with pytest.raises(TypeError, match="models\\['a'\\]"):
        measure.compare({"a": "not a model"}, (1, 3, 8, 8))


def test_machine_info_has_the_basics():
    info = measure.machine_info()
    assert info["torch"] == torch.__version__
    assert info["num_threads"] == torch.get_num_threads()
    assert isinstance(info["processor"], str) and info["processor"]
    assert info["cuda_device"] is None or isinstance(info["cuda_device"], str)


@pytest.mark.slow
def test_compiled_latency_runs_and_keeps_the_model():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).train()
    r = measure.measure_latency(model, (2, 1, 8, 8), min_run_time=0.05, compiled=True)
    assert r["compiled"] and r["median_ms"] > 0
    assert model.training  # mode restored
    df = measure.compare({"a": model, "b": model}, (2, 1, 8, 8), min_run_time=0.05, compiled=True)
    assert df.loc["a", "speedup"] == 1.0
