"""Shared test fixtures and test oracles (independent computations the library is checked against).

Test modules import what they need from here (``from conftest import ...``); pytest puts this folder
on ``sys.path``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset


from pruning_lib.models import small_vgg

SHAPE = (1, 8, 8)


def tiny_model(seed: int = 0) -> nn.Module:
    """28 prunable channels (filters 4, 8, 8 and 8 hidden units), dropout in the head so the RNG matters."""
    torch.manual_seed(seed)
    return small_vgg((4, "M", 8, "M", 8), in_channels=1, num_classes=3, hidden=8, dropout=0.2)


def blobs(n: int = 96, seed: int = 0) -> TensorDataset:
    """The class sets the brightness of a quadrant of an 8x8 image: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.5
    for c in range(3):
        x[y == c, :, (c // 2) * 4:(c // 2) * 4 + 4, (c % 2) * 4:(c % 2) * 4 + 4] += 1.5
    return TensorDataset(x, y)


def loaders(seed: int = 0):
    train_dl = DataLoader(blobs(96, seed), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(seed))
    val_dl = DataLoader(blobs(48, seed + 1), batch_size=48)
    return train_dl, val_dl


def zeroed_where_read(model: nn.Module, plan: dict, reader_of: dict, x: torch.Tensor) -> torch.Tensor:
    """The unpruned model's output with plan[conv]'s channels zeroed at the input of reader_of[conv], a module
    name given by the test (a Linear after flatten reads them as channel-major column blocks)."""
    modules = dict(model.named_modules())
    hooks = []
    for conv, idx in plan.items():
        channels = modules[conv].weight.shape[0]                # a conv's filters, a Linear's hidden units

        def zero(module, args, idx=list(idx), channels=channels):
            r = args[0].clone()
            r.view(len(r), channels, -1)[:, idx] = 0
            return (r, *args[1:])
        hooks.append(modules[reader_of[conv]].register_forward_pre_hook(zero))
    try:
        with torch.no_grad():
            return model(x)
    finally:
        for h in hooks:
            h.remove()


def masked_forward(model, plan, x):
    """The unpruned chain with the planned channels of each conv zeroed where the next conv or Linear (in module
    order, which is the data flow of a chain) reads them: written without the library's analysis."""
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return zeroed_where_read(model, plan, {n: layers[i + 1] for i, n in enumerate(layers[:-1])}, x)


def benchmark_module(name: str):
    """A script of benchmarks/ (``"bench_speed"``) imported as a module, so a test can call its functions."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Cuts:
    """Records every cut a loop makes (none when it reads a finished run back)."""

    def __init__(self):
        self.rows = []

    def on_prune(self, row, model):
        self.rows.append(row)


def assert_loops_read_back(notebook: str, profile) -> None:
    """After ``course.loops --notebook NN`` ran, the notebook's own calls read every run back (no cut made again)."""
    from pruning_lib.course import experiment, loops

    runs, run = loops.NOTEBOOKS[notebook]
    baseline = experiment.load_baseline(profile, progress=False)
    loaders = experiment.target_loaders(profile)
    val = list(loaders["val"])
    for criterion, changes in runs(profile):
        cuts = Cuts()
        _, history, _ = run(baseline, profile, criterion, loaders["train"], val, callbacks=[cuts], **changes)
        assert len(history) > 1 and cuts.rows == [], f"{criterion} {changes}: ran again instead of reading it back"
