"""Extending the library: a layer type, a criterion, a runtime, each one entry of one registry, added from here.

This is the README's 'Extending the library' example.  Every test restores the registry it changed.
(A runtime: tests/test_runtime_registry.py registers one, ``numpy_io``, from its test file.)
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import pandas as pd
import pytest
import torch
import torch.nn as nn

from conftest import SHAPE, loaders, tiny_model
from pruning_lib.graph import layer_types
from pruning_lib.graph.groups import channel_groups
from pruning_lib.graph.layer_types import PER_CHANNEL, LayerType, register_layer_type
from pruning_lib.rank import criteria
from pruning_lib.rank.criteria import rank_filters, register_criterion
from pruning_lib.recover.iterative import PruningSchedule, prune_train_repeat
from pruning_lib.surgery import prune_filters
from conftest import zeroed_where_read


@pytest.fixture
def restore_registries():
    """The layer types and criteria as they were before the test."""
    types, names = dict(layer_types.LAYER_TYPES), dict(criteria.CRITERIA)
    yield
    layer_types.LAYER_TYPES.clear()
    layer_types.LAYER_TYPES.update(types)
    criteria.CRITERIA.clear()
    criteria.CRITERIA.update(names)


# ---------------------------------------------------------------- a layer type
class ChannelScale(nn.Module):
    """Multiplies channel k by gain[k]: per-channel state, like a BatchNorm's γ."""

    def __init__(self, channels: int):
        super().__init__()
        self.gain = nn.Parameter(torch.linspace(0.5, 1.5, channels))

    def forward(self, x):                                        # (N, C, H, W)
        return x * self.gain.view(1, -1, 1, 1)


def scaled_chain() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 6, 3, padding=1), scale=ChannelScale(6), relu=nn.ReLU(),
        conv2=nn.Conv2d(6, 4, 3, padding=1), flat=nn.Flatten(), fc=nn.Linear(4 * 8 * 8, 3))).eval()


def test_an_unknown_layer_type_is_refused_by_name():
    group = channel_groups(scaled_chain())["conv1"]
    assert group.refused and "ChannelScale" in group.refused and "register_layer_type" in group.refused
    with pytest.raises(NotImplementedError, match="ChannelScale"):
        prune_filters(scaled_chain(), {"conv1": [0]})


def test_a_registered_layer_type_is_grouped_and_pruned_exactly(restore_registries):
    register_layer_type(ChannelScale, LayerType(PER_CHANNEL, rows=("gain",)))

    model = scaled_chain()
    group = channel_groups(model)["conv1"]
    assert not group.refused and [(m.module, m.role) for m in group.members] == [
        ("conv1", "out"), ("scale", "through"), ("conv2", "in")]
    plan = {"conv1": [1, 4], "conv2": [2]}
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    want = zeroed_where_read(model, plan, {"conv1": "conv2", "conv2": "fc"}, x)
    pruned = prune_filters(copy.deepcopy(model), plan)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pruned.scale.gain, model.scale.gain[[0, 2, 3, 5]])     # gain shrank with conv1


# ---------------------------------------------------------------- a criterion
def test_a_registered_criterion_ranks_and_drives_prune_train_repeat(restore_registries):
    # the largest |weight| of each filter, summed over the group's producer convs
    register_criterion("linf", lambda g: sum(c.weight.detach().abs().flatten(1).amax(1) for c in g.producers),
                       needs="weights")

    model = tiny_model()
    # the groups: three convs' filters and the hidden Linear's units (every layer whose rows are channels but the logits)
    makers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and n != "classifier.3"}
    by_hand = {n: m.weight.detach().abs().flatten(1).amax(dim=1) for n, m in makers.items()}
    got = rank_filters(model, None, "linf", normalize=None)
    assert list(got) == list(by_hand)
    for name in by_hand:
        torch.testing.assert_close(got[name], by_hand[name])

    # the first cut removes the 3 channels with the lowest L2-normalised linf scores (Eq. 9), over all groups
    normed = pd.Series({(n, k): float(v) for n, s in by_hand.items() for k, v in enumerate(s / s.norm())})
    first_cut = normed.nsmallest(3).index.get_level_values(0).value_counts()
    schedule = PruningSchedule(criterion="linf", filters_per_iteration=3, finetune_steps=2, rank_batches=1,
                               target_fraction=0.2, seed=0)
    train_dl, val_dl = loaders()
    pruned, history = prune_train_repeat(model, train_dl, val_dl, schedule, input_shape=SHAPE, progress=False)
    total = sum(m.weight.shape[0] for m in makers.values())
    assert total == 28 and list(history["filters_removed"]) == [0, 3, 6]             # round(0.2 * 28) in two cuts
    assert {n: history.loc[1, f"filters:{n}"] for n in makers} == {
        n: m.weight.shape[0] - first_cut.get(n, 0) for n, m in makers.items()}
    assert sum(dict(pruned.named_modules())[n].weight.shape[0] for n in makers) == total - 6


# ---------------------------------------------------------------- a runtime
# tests/test_runtime_registry.py registers one (`numpy_io`) from its test file and times it; not repeated here.


def test_the_readmes_extension_examples_run_as_written(restore_registries):
    """The README's "Extending the library" blocks, executed as they are: each registers what it says."""
    import re
    from pathlib import Path

    from pruning_lib.measure import runtimes

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("### Extending the library"):text.index("### Residual networks")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    scope = {"torch": torch, "model": tiny_model().eval()}
    timed_briefly = blocks[1].replace("(64, 1, 28, 28)", "(4, 1, 8, 8)").replace(
        'form="numpy_io")', 'form="numpy_io", min_run_time=0.02)')
    try:
        for block in (blocks[0], timed_briefly):
            exec(compile(block, "README.md", "exec"), scope)
        assert layer_types.layer_type(scope["ChannelScale"](4)).rows == ("gain",)
        assert "bn_scale" in criteria.CRITERIA and "numpy_io" in runtimes.RUNTIMES
        model = scope["model"]
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        with torch.no_grad():
            for bn in bns:
                bn.weight.uniform_(-1, 1)
        got = rank_filters(model, None, "bn_scale", normalize=None)
        assert len(got) == len(bns) + 1 and len(bns) > 0          # the hidden Linear's group has no BatchNorm
        for scores, bn in zip(got.values(), bns):                  # a chain: one BatchNorm per conv group, in order
            torch.testing.assert_close(scores, bn.weight.detach().abs())
        assert float(got["classifier.0"].abs().sum()) == 0.0
    finally:
        if "numpy_io" in runtimes.RUNTIMES:
            runtimes.unregister_runtime("numpy_io")


# ---------------------------------------------------------------- a producer type
class MyConv(nn.Module):
    """A conv written by hand (weight (out, in, 3, 3), F.conv2d): unknown until registered."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3) * 0.3)
        self.bias = nn.Parameter(torch.randn(cout) * 0.1)

    def forward(self, x):
        return torch.nn.functional.conv2d(x, self.weight, self.bias, padding=1)


def my_resize(conv: MyConv, channels):
    """Nothing to resize: its sizes are its tensors' shapes."""


def my_chain() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(a=MyConv(3, 6), relu=nn.ReLU(), b=MyConv(6, 5), pool=nn.AdaptiveAvgPool2d(1),
                                     flat=nn.Flatten(), fc=nn.Linear(5, 2))).eval()


def test_a_registered_producer_type_makes_groups_and_is_pruned_exactly(restore_registries):
    from pruning_lib.graph.layer_types import MIXES

    with pytest.raises(ValueError, match="MyConv, a layer type the library does not know: register it"):
        prune_filters(my_chain(), {"a": [0]})
    register_layer_type(MyConv, LayerType(MIXES, rows=("weight", "bias"), columns="weight", resize=my_resize,
                                          keeps_positions=False))
    model = my_chain()
    groups = channel_groups(model)
    assert {n: (g.producers, g.readers) for n, g in groups.items() if not g.refused} == {
        "a": (["a"], ["b"]), "b": (["b"], ["fc"])}
    plan = {"a": [0, 4], "b": [1]}
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    want = zeroed_where_read(model, plan, {"a": "b", "b": "fc"}, x)
    pruned = prune_filters(copy.deepcopy(model), plan)
    assert pruned.a.weight.shape == (4, 3, 3, 3) and pruned.b.weight.shape == (4, 4, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), want, atol=1e-5, rtol=1e-4)


def zeroed_columns(model: nn.Module, plan: dict, reader: dict, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """The model's output with each planned group's channels zeroed in dim `dim` of its reader's input (hooks)."""
    modules = dict(model.named_modules())
    hooks = []
    for name, idx in plan.items():
        def zero(module, args, idx=list(idx)):
            r = args[0].clone()
            r.index_fill_(dim, torch.tensor(idx), 0.0)
            return (r,)
        hooks.append(modules[reader[name]].register_forward_pre_hook(zero))
    try:
        with torch.no_grad():
            return model(x)
    finally:
        for h in hooks:
            h.remove()


def test_conv1d_and_transposed_convs_are_producers_pruned_exactly():
    """Each is one entry of the registry: a Conv1d's filters (weight rows), a transposed conv's output channels
    (weight dim 1: its weight is (C_in, C_out, k, k)), each checked against its reader's input zeroed by hand."""
    torch.manual_seed(0)
    one_d = nn.Sequential(OrderedDict(a=nn.Conv1d(2, 6, 3, padding=1), bn=nn.BatchNorm1d(6), relu=nn.ReLU(),
                                      b=nn.Conv1d(6, 4, 3), flat=nn.Flatten(), fc=nn.Linear(4 * 8, 3))).eval()
    with torch.no_grad():
        one_d.bn.running_mean.uniform_(-1, 1)
        one_d.bn.running_var.uniform_(0.5, 1.5)
    plan = {"a": [1, 5], "b": [2]}
    x = torch.randn(3, 2, 10)
    pruned = prune_filters(copy.deepcopy(one_d), plan)
    assert pruned.bn.num_features == 4 and pruned.fc.in_features == 3 * 8
    want = zeroed_where_read(one_d, plan, {"a": "b", "b": "fc"}, x)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), want, atol=1e-5, rtol=1e-4)

    up = nn.Sequential(OrderedDict(a=nn.Conv2d(3, 6, 3, padding=1), relu=nn.ReLU(),
                                   up=nn.ConvTranspose2d(6, 5, 2, stride=2), bn=nn.BatchNorm2d(5), relu2=nn.ReLU(),
                                   b=nn.Conv2d(5, 2, 1))).eval()
    groups = channel_groups(up)
    assert groups["up"].readers == ["b"] and groups["a"].readers == ["up"]
    plan = {"a": [0, 3], "up": [1, 4]}
    x = torch.randn(2, 3, 6, 6)
    pruned = prune_filters(copy.deepcopy(up), plan)
    assert pruned.up.weight.shape == (4, 3, 2, 2) and (pruned.up.in_channels, pruned.up.out_channels) == (4, 3)
    want = zeroed_columns(up, plan, {"a": "up", "up": "b"}, x)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), want, atol=1e-5, rtol=1e-4)
