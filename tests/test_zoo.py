"""torchvision's classification models: every channel group prunes exactly, or is refused and the model untouched.

The reference for a random plan is independent of our analysis: Torch-Pruning removes the same channels with
its own dependency graph (it agrees with our groups on every model here), and both pruned models must have the
same conv widths and compute the same outputs.  `benchmarks/zoo_groups.py` runs a similar check over every
model in ``torchvision.models`` for the README's table, with `zeroed_at_producers` (built from our groups).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torchvision

from pruning_lib.checkpoints import save_pruned
from pruning_lib.surgery import load_pruned
from pruning_lib.graph.groups import channel_groups
from pruning_lib.surgery import prune_filters

try:  # a dev dependency: `make test` runs these cross-checks, it never skips them
    import torch_pruning as tp
except ImportError as err:
    raise ImportError('tests/test_zoo.py needs Torch-Pruning (a dev dependency): pip install -e ".[dev]"') from err

MODELS = ["resnet18", "resnet34", "resnet50", "wide_resnet50_2", "resnext50_32x4d", "mobilenet_v2",
          "mobilenet_v3_small", "densenet121", "efficientnet_b0", "regnet_x_400mf", "googlenet", "squeezenet1_0"]

SAVED = {"resnet18", "mobilenet_v2", "densenet121", "efficientnet_b0"}


def build(name: str) -> nn.Module:
    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.5, 0.5)
    return model


def zeroed_at_producers(model: nn.Module, groups, removed: dict[str, list[int]]) -> nn.Module:
    """`model` with the removed channels made zero where they are created (the members' rows), read from our own
    `groups`: the benchmark's reference for models Torch-Pruning is not run on; the test uses `torch_pruned`."""
    ref = copy.deepcopy(model)
    modules = dict(ref.named_modules())
    with torch.no_grad():
        for group, ks in removed.items():
            for member in groups[group].members:
                module, idx = modules[member.module], [member.offset + k for k in ks]
                if member.role in ("out", "through"):
                    module.weight[idx] = 0
                    if module.bias is not None:
                        module.bias[idx] = 0
    return ref


def torch_pruned(model: nn.Module, plan: dict[str, list[int]], x: torch.Tensor) -> nn.Module:
    """A copy of `model` with each planned conv's channels removed by Torch-Pruning (its own dependency graph)."""
    ref = copy.deepcopy(model)
    graph = tp.DependencyGraph().build_dependency(ref, example_inputs=x)
    modules = dict(ref.named_modules())
    for name, indices in plan.items():
        pruner = tp.prune_linear_out_channels if isinstance(modules[name], nn.Linear) else tp.prune_conv_out_channels
        graph.get_pruning_group(modules[name], pruner, idxs=list(indices)).prune()
    return ref


def conv_widths(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Every conv's and Linear's weight shape and groups (a Linear's hidden units are channels too)."""
    return {n: (*m.weight.shape[:2], getattr(m, "groups", 1)) for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))}


@pytest.mark.parametrize("name", MODELS)
def test_zoo_model_prunes_exactly_or_refuses(name, tmp_path):
    model = build(name)
    groups = channel_groups(model)
    prunable = [g for g in groups.values() if not g.refused and g.size > 1]
    assert prunable, f"{name}: no prunable group"
    gen = torch.Generator().manual_seed(1)
    removed = {g.name: sorted(torch.randperm(g.size, generator=gen)[: max(1, g.size // 8)].tolist()) for g in prunable}
    x = torch.randn(2, 3, 64, 64, generator=gen)
    theirs = torch_pruned(model, removed, x)
    pruned = prune_filters(copy.deepcopy(model), removed)
    assert conv_widths(pruned) == conv_widths(theirs)
    assert all(conv_widths(pruned)[n][0] == conv_widths(model)[n][0] - len(ks) for n, ks in removed.items())
    with torch.no_grad():
        got, want, unpruned = pruned(x), theirs(x), model(x)
    torch.testing.assert_close(got, want, atol=1e-4 * float(want.abs().max()), rtol=1e-4)
    assert not torch.allclose(unpruned, want, atol=1e-3 * float(want.abs().max()))      # the plan changes the output
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    if name in SAVED:                                  # widths (depthwise groups too) and weights, weights_only
        loaded, _ = load_pruned(save_pruned(pruned, tmp_path / f"{name}.pt"), build(name))
        with torch.no_grad():
            torch.testing.assert_close(loaded.eval()(x), got, atol=0, rtol=0)

    refused = [g for g in groups.values() if g.refused and g.producers]
    if refused:
        state = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(NotImplementedError, match="refused"):
            prune_filters(model, {refused[0].producers[0]: [0]})
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
