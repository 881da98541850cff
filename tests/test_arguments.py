"""`pruning_lib.prune` from the caller's side: every wrong argument gets a message naming it as written, before any
work, and the README's table "When an argument is wrong" is checked here row by row, as it is written."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision

import pruning_lib
from conftest import SHAPE, loaders, tiny_model
from pruning_lib.checkpoints import fingerprint

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_rows() -> list[tuple[str, str]]:
    """The README's rows: (the call, the message), backticks removed."""
    text = README.read_text()
    section = text[text.index("### When an argument is wrong"):]
    section = section[:section.index("\n### ", 5)]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| `") else []
        if len(cells) == 2:
            rows.append((cells[0].strip("`"), cells[1].strip("`")))
    return rows


@pytest.fixture(scope="module")
def scope():
    """What the README's setup line names: a ResNet-18 for 3x64x64 images, a batch, and loaders of pairs."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(8, 3, 64, 64)
    data = [(torch.randn(8, 3, 64, 64), torch.randint(0, 10, (8,))) for _ in range(2)]
    return {"prune": pruning_lib.prune, "model": model, "x": x, "train": data, "val": data[:1], "torch": torch}


def test_the_readme_table_has_the_messages_prune_gives(scope, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("runs").mkdir()                                  # the table's checkpoint folder
    rows = readme_rows()
    assert len(rows) >= 12
    before = fingerprint(scope["model"])
    for call, message in rows:
        with pytest.raises((TypeError, ValueError)) as raised:
            exec(call, dict(scope))
        assert str(raised.value) == message, call
    assert fingerprint(scope["model"]) == before, "a refused call leaves the model as it was"


def test_a_model_fx_cannot_trace_is_named_by_its_line_and_a_wrapper_by_what_to_pass():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            y = self.c(x)
            if y.sum() > 0:
                return y
            return -y

    x, (train, val) = torch.randn(1, 3, 16, 16), loaders()
    with pytest.raises(NotImplementedError, match=r"test_arguments.py:\d+ `if y.sum\(\) > 0:"):
        pruning_lib.prune(Dynamic(), x, train, val, fraction=0.5)
    with pytest.raises(TypeError, match="prune model.module"):
        pruning_lib.prune(nn.DataParallel(tiny_model()), torch.randn(1, *SHAPE), train, val, fraction=0.5)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        pruning_lib.prune("resnet18", torch.randn(1, *SHAPE), train, val, fraction=0.5)


def test_example_inputs_of_another_dtype_or_shape_are_named_before_any_work():
    train, val = loaders()
    model = tiny_model()
    with pytest.raises(TypeError, match=r"example_inputs must be one batch of inputs.*got a list"):
        pruning_lib.prune(model, [1, 2], train, val, fraction=0.5)
    with pytest.raises(ValueError, match=re.escape("example_inputs have 2 channels (a tensor (1, 2, 8, 8) float32), but "
                                                   "the model's first layer features.0 expects 1: pass one batch the "
                                                   "model accepts, e.g. torch.randn(1, 1, 8, 8)")):
        pruning_lib.prune(model, torch.randn(1, 2, 8, 8), train, val, fraction=0.5)
    with pytest.raises(ValueError, match=r"example_inputs \(a tensor \(1, 1, 2, 2\) float32\) do not run through the "
                                         r"model: RuntimeError"):
        pruning_lib.prune(model, torch.randn(1, 1, 2, 2), train, val, fraction=0.5)     # too small for two poolings


def test_an_argument_that_would_be_ignored_is_refused():
    train, val = loaders()
    x = torch.randn(4, *SHAPE)
    model = tiny_model()
    with pytest.raises(ValueError, match="num_threads=2 would be ignored"):
        pruning_lib.prune(model, x, train, val, fraction=0.5, num_threads=2)
    with pytest.raises(ValueError, match="lr=0.001 would be ignored"):
        pruning_lib.prune(model, x, train, val, fraction=0.5, lr=1e-3,
                          optimizer=lambda p: torch.optim.SGD(p, lr=0.1))


def test_no_global_side_effect_the_random_state_and_the_loaders_generator_are_put_back():
    train_dl, val_dl = loaders()
    model = tiny_model()                                  # seeds torch: before the state is read
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    x = torch.randn(2, *SHAPE)
    state = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state(), train_dl.generator.get_state())
    pruning_lib.prune(model, x, train_dl, val_dl, fraction=0.3, finetune_steps=2, progress=False)
    assert random.getstate() == state[0] and np.array_equal(np.random.get_state()[1], state[1])
    assert torch.equal(torch.get_rng_state(), state[2]) and torch.equal(train_dl.generator.get_state(), state[3])


def test_excluded_layers_are_kept_whole_and_a_metric_of_any_scale_is_accepted():
    """exclude= keeps a module's tensors as they are: no group it belongs to (producer, on the way or reader) loses
    a channel; min_metric on a negative scale (a negative MSE) is fine."""
    train, val = loaders()
    model = tiny_model()

    def negative_loss(m, loader):
        with torch.no_grad():
            return -float(sum(nn.functional.cross_entropy(m(x), y) for x, y in loader))

    pruned, history = pruning_lib.prune(model, torch.randn(2, *SHAPE), train, val, fraction=0.3, finetune_steps=1,
                                        exclude=["features.4"], metric=negative_loss, min_metric=-1e9, progress=False)
    modules = dict(pruned.named_modules())
    assert modules["features.4"].weight.shape == model.features[4].weight.shape      # its filters and its inputs
    assert history["filters:features.0"].iloc[-1] == 4 and history["filters:features.4"].iloc[-1] == 8
    assert history["filters_removed"].iloc[-1] > 0 and (history["accuracy_after_finetune"] < 0).all()


class TwoInputs(nn.Module):
    """A model of two inputs: an image and a scale, the way a practitioner's network may take side information."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 6, 3, padding=1)
        self.b = nn.Conv2d(6, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, image, scale):
        y = torch.relu(self.b(torch.relu(self.a(image * scale.view(-1, 1, 1, 1)))))
        return self.fc(y.mean(dim=(2, 3)))


@pytest.mark.parametrize("as_dict", [False, True])
def test_example_inputs_may_be_a_tuple_or_a_dict(as_dict):
    torch.manual_seed(0)
    x, scale = torch.randn(16, *SHAPE), torch.rand(16) + 0.5
    y = torch.randint(0, 3, (16,))
    inputs = {"image": x, "scale": scale} if as_dict else (x, scale)
    batches = [({"image": x[:8], "scale": scale[:8]} if as_dict else (x[:8], scale[:8]), y[:8]),
               ({"image": x[8:], "scale": scale[8:]} if as_dict else (x[8:], scale[8:]), y[8:])]
    model = TwoInputs()
    pruned, history = pruning_lib.prune(model, inputs, batches, batches, fraction=0.3, finetune_steps=2,
                                        progress=False)
    assert history["filters_removed"].iloc[-1] == round(0.3 * 14)
    with torch.no_grad():
        out = pruned(**inputs) if as_dict else pruned(*inputs)
    assert out.shape == (16, 3)
    with pytest.raises(ValueError, match="speedup= times the network on inputs shaped like example_inputs"):
        pruning_lib.prune(model, inputs, batches, batches, speedup=1.5)


def test_a_checkpoint_of_another_run_names_what_prune_takes(tmp_path):
    train, val = loaders()
    path = tmp_path / "run.pt"
    x = torch.randn(2, *SHAPE)
    pruning_lib.prune(tiny_model(), x, train, val, fraction=0.2, finetune_steps=1, checkpoint=path, progress=False)
    with pytest.raises(ValueError, match=re.escape("pass restart=True to start over")) as raised:
        pruning_lib.prune(tiny_model(), x, train, val, fraction=0.3, finetune_steps=1, checkpoint=path, progress=False)
    assert "restart_stale" not in str(raised.value)
    _, history = pruning_lib.prune(tiny_model(), x, train, val, fraction=0.3, finetune_steps=1, checkpoint=path,
                                   restart=True, progress=False)
    assert history["filters_removed"].iloc[-1] == round(0.3 * 28)        # started over: 30% of 28 channels
