"""The runtime you ship with: ONNX export, the output check (and broken files), ONNX Runtime timing, missing packages."""

from __future__ import annotations

import copy
import importlib

import pandas as pd
import pytest
import torch
from torch import nn

from pruning_lib import measure
from pruning_lib.course import narrate, reports
from pruning_lib.measure import runtimes
from pruning_lib.models import small_vgg
from pruning_lib.models.resnets import small_resnet
from pruning_lib.surgery import prune_filters

pytest.importorskip("onnxruntime", reason="the deploy extra (onnx, onnxscript, onnxruntime) is not installed")


def _trained_like(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2), m.bias.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize("build", [lambda: small_vgg(num_classes=2), lambda: small_resnet(num_classes=2)],
                         ids=["small_vgg", "small_resnet"])
def test_export_is_one_file_with_a_dynamic_batch_and_the_same_outputs(tmp_path, build):
    model = _trained_like(build())
    path = runtimes.export_onnx(model, tmp_path / "net.onnx", (2, 1, 28, 28))
    assert path.is_file() and path.stat().st_size > 0.8 * 4 * sum(p.numel() for p in model.parameters())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx"]            # no external data file
    x = torch.randn(5, 1, 28, 28)                                                # another batch size than traced
    diff = runtimes.check_onnx(path, model, x)
    assert 0 <= diff < 1e-4
    got = runtimes.runner(path)(x.numpy())
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x), rtol=1e-4, atol=1e-5)
    assert not model.training and next(model.parameters()).requires_grad     # the model itself is untouched


def test_a_broken_or_foreign_file_is_reported_not_timed(tmp_path):
    model = _trained_like(small_vgg(num_classes=2))
    x = torch.randn(4, 1, 28, 28)
    garbage = tmp_path / "broken.onnx"
    garbage.write_bytes(b"\x08\x07this is not a protobuf" * 10)
    with pytest.raises(runtimes.OnnxMismatchError, match="not a valid ONNX model"):
        runtimes.check_onnx(garbage, model, x)

    good = runtimes.export_onnx(model, tmp_path / "good.onnx", (2, 1, 28, 28))
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(runtimes.OnnxMismatchError):
        runtimes.check_onnx(truncated, model, x)

    other = _trained_like(small_vgg(num_classes=2))
    with torch.no_grad():
        other.features[0].weight.mul_(1.5)                                         # a different network, same shapes
    with pytest.raises(runtimes.OnnxMismatchError, match="differ from PyTorch's by up to") as info:
        runtimes.check_onnx(good, other, x)
    assert "not timed" in str(info.value)
    wrong_head = small_vgg(num_classes=3).eval()
    with pytest.raises(runtimes.OnnxMismatchError, match="shape"):
        runtimes.check_onnx(good, wrong_head, x)


class DataDependent(nn.Module):
    """A layer torch.export cannot capture: Python control flow on a tensor's value."""

    def forward(self, x):
        return x * 2 if float(x.detach().sum()) > 0 else x


def test_a_model_that_does_not_export_names_the_layer(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), DataDependent(), nn.Flatten(), nn.Linear(144, 2)).eval()
    with pytest.raises(runtimes.OnnxExportError, match=r"layer '2' \(DataDependent\)"):
        runtimes.export_onnx(model, tmp_path / "m.onnx", (2, 1, 8, 8))
    assert not (tmp_path / "m.onnx").exists()


def test_onnxruntime_is_a_form_of_measure_latency(monkeypatch):
    model = _trained_like(small_vgg(num_classes=2))
    timed = measure.measure_latency(model, (8, 1, 28, 28), form="onnxruntime", num_threads=1, min_run_time=0.05)
    assert timed["form"] == "onnxruntime" and timed["median_ms"] > 0 and timed["device"] == "cpu"
    calls = []
    monkeypatch.setattr(runtimes, "export_onnx", lambda *a, **k: calls.append(a))
    again = measure.measure_latency(model, (16, 1, 28, 28), form="onnxruntime", num_threads=1, min_run_time=0.05)
    assert again["batch_size"] == 16 and calls == []               # exported and checked once per weights
    monkeypatch.undo()
    pruned = prune_filters(copy.deepcopy(model), {"features.0": list(range(16))})
    table = measure.side_by_side({"dense": model, "pruned": pruned}, (1, 28, 28), [4], forms=("deploy", "onnxruntime"),
                                 num_threads=1, min_run_time=0.05, rounds=1)
    assert set(table["form"]) == {"deploy", "onnxruntime"} and (table["latency_ms"] > 0).all()
    with pytest.raises(ValueError, match="onnxruntime"):
        measure.measure_latency(model, (2, 1, 28, 28), form="tensorrt")


def test_a_file_exported_for_display_is_the_one_timed_until_it_changes(tmp_path, monkeypatch):
    model = _trained_like(small_vgg(num_classes=2))
    torch.manual_seed(1)
    other = small_vgg(num_classes=2).eval()
    path = runtimes.export_onnx(model, tmp_path / "dense.onnx", (2, 1, 28, 28))
    exports = []
    real = runtimes._export
    monkeypatch.setattr(runtimes, "_export", lambda *a: exports.append(a[2]) or real(*a))
    measure.measure_latency(model, (4, 1, 28, 28), form="onnxruntime", min_run_time=0.01)
    assert exports == []                                           # notebook 04's file, not a second export
    runtimes.export_onnx(other, path, (2, 1, 28, 28))              # written over by another model
    measure.measure_latency(model, (4, 1, 28, 28), form="onnxruntime", min_run_time=0.01)
    assert len(exports) == 2 and exports[-1] != path               # the first model is exported again, elsewhere
    path.write_bytes(b"edited")                                    # a file changed on disk is never timed
    timed = measure.measure_latency(other, (4, 1, 28, 28), form="onnxruntime", min_run_time=0.01)
    assert len(exports) == 3 and timed["median_ms"] > 0


def test_a_mismatching_export_is_not_timed(monkeypatch):
    torch.manual_seed(7)
    model = _trained_like(small_vgg(num_classes=2))                # weights not timed before in this process
    real = runtimes.onnx_session

    class OffByOne:
        """The real session, its outputs shifted by 1: what a wrong file or a broken runtime would give."""

        def __init__(self, path, **kwargs):
            self.session = real(path, **kwargs)

        def get_inputs(self):
            return self.session.get_inputs()

        def run(self, names, feed):
            return [out + 1 for out in self.session.run(names, feed)]

    monkeypatch.setattr(runtimes, "onnx_session", OffByOne)
    with pytest.raises(runtimes.OnnxMismatchError, match="differ from PyTorch's by up to 1.*not timed"):
        measure.measure_latency(model, (2, 1, 28, 28), form="onnxruntime", min_run_time=0.01)
    monkeypatch.undo()
    timed = measure.measure_latency(model, (2, 1, 28, 28), form="onnxruntime", min_run_time=0.01)
    assert timed["median_ms"] > 0                                  # the runner that failed was not kept


def test_missing_packages_say_how_to_install(monkeypatch):
    real = importlib.import_module

    def without_onnxruntime(name, *args, **kwargs):
        if name in ("onnxruntime", "openvino"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", without_onnxruntime)
    with pytest.raises(runtimes.MissingRuntimeError, match=r'pip install -e "\.\[deploy\]"'):
        runtimes.require("onnxruntime")
    with pytest.raises(runtimes.MissingRuntimeError, match="pip install openvino"):
        runtimes.require("openvino")
    why = runtimes.available_runtimes()
    assert "onnxruntime is not installed" in why["onnxruntime"] and why["openvino"]
    assert issubclass(runtimes.MissingRuntimeError, ImportError)


def test_summary_runtimes_block_and_the_notebooks_sentence():
    table = pd.DataFrame([
        {"form": f, "batch": 64, "model": m, "latency_ms": ms, "speedup": sp, "flops_ratio": fr,
         "speedup_per_flops": sp / fr}
        for f, rows in {"deploy": [("dense", 20.0, 1.0, 1.0), ("taylor", 6.0, 20 / 6, 5.0)],
                        "onnxruntime": [("dense", 16.0, 1.0, 1.0), ("taylor", 4.0, 4.0, 5.0)]}.items()
        for m, ms, sp, fr in rows])
    block = reports.runtimes_block(table, batch=64, num_threads=1)
    assert block["onnxruntime"] == {"batch_size": 64, "num_threads": 1, "models": {
        "dense": {"latency_ms": 16.0, "speedup": 1.0}, "taylor": {"latency_ms": 4.0, "speedup": 4.0}}}
    entry = {"accuracy": 0.85, "gflops": 0.06, "params": 10, "size_mb": 1.0, "latency_ms": 20.0}
    summary = {"profile": "quick", "dataset": "d", "model": "m", "dense": entry,
               "pruned": {"taylor": {**entry, "speedup": 3.3}}, "runtimes": block}
    assert reports.validate_summary(summary) is summary
    bad = {**summary, "runtimes": {"onnxruntime": {**block["onnxruntime"], "models": {"taylor": {"latency_ms": 0}}}}}
    with pytest.raises(ValueError, match="runtimes.*taylor"):
        reports.validate_summary(bad)
    text = narrate.runtimes(table.set_index(["form", "model"]), pruned="taylor", torch_form="deploy", batch=64, threads=1)
    assert "4.00× faster" in text and "(against 3.33× in PyTorch's deploy form)" in text and "1.25× faster" in text
    assert "0.80 of the FLOPs ratio, against 0.67 in PyTorch" in text and "target" not in text


def test_openvino_when_installed(tmp_path):
    pytest.importorskip("openvino", reason="OpenVINO (the openvino extra) is not installed")
    model = _trained_like(small_resnet(num_classes=2))
    path = runtimes.export_onnx(model, tmp_path / "r.onnx", (2, 1, 28, 28))
    assert runtimes.check_onnx(path, model, torch.randn(4, 1, 28, 28), runtime="openvino") < 1e-4   # float32, not bf16
    timed = measure.measure_latency(model, (4, 1, 28, 28), form="openvino", num_threads=1, min_run_time=0.05)
    assert timed["form"] == "openvino" and timed["median_ms"] > 0
