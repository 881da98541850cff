"""The recovery widget's work, headless: the pure function and the controller behind the buttons."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pruning_lib import train
from pruning_lib.models import small_vgg
from pruning_lib.recovery import RECOVERY_COLUMNS, prune_and_finetune, recovery_widget
from pruning_lib.surgery import filters_per_layer

SHAPE = (1, 8, 8)


def data(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.5
    x[y == 1, :, :4] += 1.5
    return TensorDataset(x, y)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = small_vgg((8, "M", 16), in_channels=1, num_classes=2)
    train_dl = DataLoader(data(64, 0), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    val_dl = DataLoader(data(32, 1), batch_size=32)
    train.fit(model, train_dl, steps=30, lr=1e-2, progress=False)
    return model.eval(), train_dl, val_dl


def test_prune_and_finetune_records_the_drop_and_the_recovery(setup):
    model, train_dl, val_dl = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    result = prune_and_finetune(model, train_dl, val_dl, input_shape=SHAPE, amount=0.5, steps=10, eval_every=5,
                                on_record=lambda h, info: seen.append(len(h)))
    h = result.history
    assert tuple(h.columns) == RECOVERY_COLUMNS
    assert list(h["phase"][:2]) == ["baseline", "pruned"] and (h["phase"][2:] == "fine-tune").all()
    assert list(h["step"][2:]) == [5, 10]
    assert h["accuracy"].between(0, 1).all() and seen == sorted(seen) and seen[-1] == len(h)
    assert result.pruned["gflops"] < result.baseline["gflops"] and result.pruned["params"] < result.baseline["params"]
    assert sum(filters_per_layer(result.model).values()) == 12  # half of 24 filters removed, for real
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # baseline untouched


def test_should_stop_ends_fine_tuning_early(setup):
    model, train_dl, val_dl = setup
    calls = []
    result = prune_and_finetune(model, train_dl, val_dl, input_shape=SHAPE, amount=0.25, steps=20, eval_every=5,
                                should_stop=lambda: len(calls) >= 3, on_progress=lambda s, n: calls.append(s))
    assert result.stopped and result.history["step"].iloc[-1] < 20


def test_widget_controls_drive_the_pure_function_headless(setup):
    model, train_dl, val_dl = setup
    box = recovery_widget(model, train_dl, val_dl, input_shape=SHAPE, steps=10, eval_every=5, background=False)
    c = box.controller
    assert c.plot.outputs and "image/png" in c.plot.outputs[0]["data"]  # the baseline is shown at once
    c.amount.value, c.criterion.value, c.steps.value = 0.5, "random", 10  # move the controls ...
    c.press()                                                             # ... and press the button
    assert c.result is not None and c.error is None
    assert c.result.history["step"].iloc[-1] == 10 and c.progress.value == 10
    assert "done" in c.status.value and "FLOPs" in c.sizes.value
    assert not c.button.disabled and c.stop_button.disabled
