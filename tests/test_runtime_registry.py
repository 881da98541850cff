"""A runtime is one entry of one registry: one registered here is a form of measure_latency and compare."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from pruning_lib import measure
from pruning_lib.measure import runtimes

from conftest import tiny_model

SHAPE = (1, 8, 8)


def numpy_io(built: list | None = None) -> runtimes.Runtime:
    """A runtime built from the model: its BatchNorms folded into the convs, fed and read as numpy arrays
    (the protocol of every runtime).  `built` records each runner built: ``(model class, threads)``."""

    def from_model(model: nn.Module, example: torch.Tensor, num_threads: int) -> runtimes.Runner:
        if built is not None:
            built.append((type(model).__name__, num_threads))
        folded = measure.fold_batchnorm(model)

        def run(batch: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return folded(torch.from_numpy(batch)).numpy()
        return run

    return runtimes.Runtime("numpy_io", from_model=from_model)


@pytest.fixture
def registered():
    """Register the numpy_io runtime for one test; the list records each runner built."""
    built: list = []
    measure.register_runtime(numpy_io(built))
    yield built
    measure.unregister_runtime("numpy_io")


def test_a_registered_runtime_is_a_form_of_measure_latency(registered):
    model = tiny_model(seed=3).eval()
    timed = measure.measure_latency(model, (4, *SHAPE), form="numpy_io", num_threads=1, min_run_time=0.02)
    assert timed["form"] == "numpy_io" and timed["device"] == "cpu" and not timed["compiled"]
    assert timed["batch_size"] == 4 and timed["num_threads"] == 1 and timed["runs"] >= 1
    assert 0 < timed["median_ms"] and timed["iqr_ms"] >= 0 and timed["mean_ms"] > 0
    assert math.isclose(timed["throughput"], 4 / (timed["median_ms"] / 1e3))
    again = measure.measure_latency(model, (16, *SHAPE), form="numpy_io", num_threads=1, min_run_time=0.02)
    assert again["batch_size"] == 16 and len(registered) == 1            # built and checked once per weights
    measure.measure_latency(model, (4, *SHAPE), form="numpy_io", num_threads=2, min_run_time=0.02)
    assert [threads for _, threads in registered] == [1, 2]              # ... and per thread count
    assert model.training is False and next(model.parameters()).requires_grad


def test_every_place_that_lists_runtimes_reads_the_registry(registered):
    assert "numpy_io" in measure.RUNTIMES and "numpy_io" in measure.FORMS + measure.RUNTIMES
    assert measure.available_runtimes()["numpy_io"] is None            # needs no package
    dense, other = tiny_model(seed=0).eval(), tiny_model(seed=1).eval()
    table = measure.compare({"dense": dense, "other": other}, (2, *SHAPE), form="numpy_io", min_run_time=0.02)
    assert (table["latency_ms"] > 0).all() and table.loc["dense", "speedup"] == 1.0
    with pytest.raises(ValueError, match="unknown form 'tensorrt'.*'onnxruntime'.*'numpy_io'"):
        measure.measure_latency(dense, (2, *SHAPE), form="tensorrt")


def test_an_unregistered_runtime_is_an_unknown_form():
    measure.register_runtime(numpy_io())
    measure.unregister_runtime("numpy_io")
    assert "numpy_io" not in measure.RUNTIMES and "numpy_io" not in measure.available_runtimes()
    with pytest.raises(ValueError, match="unknown form 'numpy_io'; choose one of .*'onnxruntime'"):
        measure.measure_latency(tiny_model().eval(), (2, *SHAPE), form="numpy_io")
    with pytest.raises(ValueError, match="unknown runtime 'numpy_io'"):
        measure.unregister_runtime("numpy_io")


def test_names_are_unique_and_a_runtime_builds_one_way(registered):
    with pytest.raises(ValueError, match="already registered.*replace=True"):
        measure.register_runtime(numpy_io())
    assert measure.register_runtime(numpy_io(), replace=True).name == "numpy_io"
    with pytest.raises(ValueError, match="name of a PyTorch form"):
        measure.register_runtime(runtimes.Runtime("deploy", from_model=lambda m, x, n: m))
    with pytest.raises(ValueError, match="exactly one of from_onnx"):
        runtimes.Runtime("both", from_onnx=lambda p, n: None, from_model=lambda m, x, n: None)
    with pytest.raises(ValueError, match="exactly one of from_onnx"):
        runtimes.Runtime("neither")
    onnx_based = runtimes.Runtime("mine", ("my_runtime",), from_onnx=lambda p, n: None)
    assert onnx_based.needs == ("onnx", "onnxscript", "my_runtime")          # the exporter's packages too


def test_a_runtime_whose_outputs_differ_is_not_timed():
    def off_by_one(model, example, num_threads):
        return lambda batch: model(torch.from_numpy(batch)).detach().numpy() + 1.0

    measure.register_runtime(runtimes.Runtime("off_by_one", from_model=off_by_one))
    try:
        with pytest.raises(runtimes.OutputMismatchError, match="differ from PyTorch's by up to 1.*not timed"):
            measure.measure_latency(tiny_model().eval(), (2, *SHAPE), form="off_by_one", min_run_time=0.01)
    finally:
        measure.unregister_runtime("off_by_one")


def test_a_missing_package_says_how_to_install_it():
    measure.register_runtime(runtimes.Runtime("absent", ("no_such_package_xyz",), from_model=lambda m, x, n: m,
                                              install="pip install no-such-package"))
    try:
        assert "pip install no-such-package" in measure.available_runtimes()["absent"]
        with pytest.raises(runtimes.MissingRuntimeError, match="no_such_package_xyz is not installed.*no-such-package"):
            measure.measure_latency(tiny_model().eval(), (2, *SHAPE), form="absent", min_run_time=0.01)
    finally:
        measure.unregister_runtime("absent")


def test_the_runners_kept_are_bounded(registered):
    shape = (2, *SHAPE)
    first = tiny_model(seed=100).eval()
    measure.measure_latency(first, shape, form="numpy_io", num_threads=1, min_run_time=0.01)
    for seed in range(101, 121):                                           # 20 other weights
        last = tiny_model(seed=seed).eval()
        measure.measure_latency(last, shape, form="numpy_io", num_threads=1, min_run_time=0.01)
    assert len(registered) == 21
    measure.measure_latency(last, shape, form="numpy_io", num_threads=1, min_run_time=0.01)
    assert len(registered) == 21                                           # the most recent one is kept
    measure.measure_latency(first, shape, form="numpy_io", num_threads=1, min_run_time=0.01)
    assert len(registered) == 22                                           # the oldest was let go: built again
