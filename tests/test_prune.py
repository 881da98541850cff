"""`pruning_lib.prune`, the face of the library: the README's snippet as written, on the models a practitioner brings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader, TensorDataset

import pruning_lib
from pruning_lib.graph.groups import group_widths
from pruning_lib.measure import count_flops

README = Path(__file__).resolve().parents[1] / "README.md"


def loaders(n=32, size=32, classes=3, seed=0, regression=False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=gen)
    y = torch.randn(n, classes, generator=gen) if regression else torch.randint(0, classes, (n,), generator=gen)
    data = TensorDataset(x, y)
    return (DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(seed)),
            DataLoader(data, batch_size=16))


def readme_snippet() -> str:
    text = README.read_text()
    section = text[text.index("### Prune your own model"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readmes_snippet_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = readme_snippet()
    assert "pruning_lib.prune(" in code and len(code.strip().splitlines()) <= 14
    fast = code.replace("finetune_steps=100,", "finetune_steps=2,")
    assert fast != code                                   # the one number the test changes
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    train_loader, val_loader = loaders()
    namespace = {"model": model, "train_loader": train_loader, "val_loader": val_loader}
    exec(compile(fast, "README.md", "exec"), namespace)
    pruned, history = namespace["pruned"], namespace["history"]
    shape = (1, 3, 32, 32)
    assert count_flops(pruned, shape) <= count_flops(model, shape) / 2
    assert (tmp_path / "prune.pt").exists() and len(history) >= 2
    again, history2 = pruning_lib.prune(model, torch.randn(1, 3, 32, 32), train_loader, val_loader,
                                        flops_reduction=2.0, finetune_steps=2, checkpoint="prune.pt", progress=False)
    assert len(history2) == len(history) and group_widths(again) == group_widths(pruned)   # resumed: nothing to do


class SharedReLU(nn.Module):
    """One `self.relu` after every conv (torchvision's style)."""

    def __init__(self, functional=False):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12)
        self.c3 = nn.Conv2d(12, 16, 3, padding=1)
        self.relu, self.functional = nn.ReLU(), functional
        self.fc = nn.Linear(16, 3)

    def act(self, x):
        return F.relu(x) if self.functional else self.relu(x)

    def forward(self, x):
        x = F.max_pool2d(self.act(self.b1(self.c1(x))), 2)
        x = self.act(self.b2(self.c2(x)))
        x = self.act(self.c3(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@pytest.mark.parametrize("build", [lambda: torchvision.models.mobilenet_v2(num_classes=3),
                                   lambda: SharedReLU(), lambda: SharedReLU(functional=True)],
                         ids=["mobilenet_v2", "shared_relu", "F.relu"])
def test_prune_reaches_its_target_on_models_written_every_way(build):
    torch.manual_seed(0)
    model = build().eval()
    train_loader, val_loader = loaders()
    before = dict(group_widths(model))
    pruned, history = pruning_lib.prune(model, torch.randn(1, 3, 32, 32), train_loader, val_loader, fraction=0.3,
                                        finetune_steps=1, progress=False)
    assert history["filters_removed"].iloc[-1] >= round(0.3 * sum(before.values()))   # the fraction, as a count
    assert group_widths(model) == before                        # the caller's model is left as it was
    assert sum(group_widths(pruned).values()) < sum(before.values())
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_prune_with_another_loss_metric_and_optimizer():
    torch.manual_seed(0)
    model = SharedReLU().eval()                                     # a regression: 3 outputs, MSE
    train_loader, val_loader = loaders(regression=True)
    used = []

    def neg_mse(m, loader):
        with torch.no_grad():
            return -sum(float(F.mse_loss(m(x), y, reduction="sum")) for x, y in loader) / 32

    def sgd(params):
        used.append(params)
        return torch.optim.SGD(params, lr=1e-3)

    pruned, history = pruning_lib.prune(model, torch.randn(1, 3, 32, 32), train_loader, val_loader, fraction=0.25,
                                        loss_fn=F.mse_loss, metric=neg_mse, optimizer=sgd, finetune_steps=2,
                                        progress=False)
    assert history["accuracy_after_finetune"].iloc[-1] == pytest.approx(neg_mse(pruned, val_loader))
    assert used and all(p.shape == q.shape for p, q in zip(used[-1], [p for p in pruned.parameters()]))
    assert len(used) == len(history) - 1                          # a fresh optimizer for every fine-tune


def test_prune_refuses_clearly():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            y = self.c(x)
            if y.sum() > 0:                                         # Python control flow on a tensor's value
                return y
            return -y

    x, (train_loader, val_loader) = torch.randn(1, 3, 32, 32), loaders()
    with pytest.raises(NotImplementedError, match=r"test_prune.py:\d+ `if y.sum\(\) > 0:"):
        pruning_lib.prune(Dynamic(), x, train_loader, val_loader, fraction=0.5)
    with pytest.raises(ValueError, match="give a target"):
        pruning_lib.prune(SharedReLU(), x, train_loader, val_loader)
    with pytest.raises(ValueError, match="grouped conv"):
        pruning_lib.prune(nn.Sequential(nn.Conv2d(3, 4, 3, groups=1), nn.Conv2d(4, 4, 3, groups=2)), x,
                          train_loader, val_loader, fraction=0.5)


def test_prune_to_a_measured_speedup(tmp_path, monkeypatch):
    """`speedup=`: each cut follows a latency table measured here, and every iteration is timed end to end."""
    monkeypatch.setenv("PRUNING_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    train_loader, val_loader = loaders()
    pruned, history = pruning_lib.prune(SharedReLU().eval(), torch.randn(16, 3, 32, 32), train_loader, val_loader,
                                        speedup=1.3, finetune_steps=1, max_fraction=0.75, progress=False)
    assert history["speedup"].iloc[0] == 1.0 and history["latency_ms"].gt(0).all()
    assert list(tmp_path.glob("latency-*.json"))                     # the tables were measured (and cached)
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 3)
