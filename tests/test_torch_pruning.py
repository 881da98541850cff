"""Cross-check with Torch-Pruning: the same channels removed give the same widths and the same outputs."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from pruning_lib.graph.groups import channel_groups
from pruning_lib.surgery import prune_filters
from test_zoo import build

try:  # a dev dependency: `make test` runs these cross-checks, it never skips them
    import torch_pruning as tp
except ImportError as err:
    raise ImportError('tests/test_torch_pruning.py needs Torch-Pruning (a dev dependency): pip install -e ".[dev]"') from err


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2"])
def test_same_plan_same_widths_and_outputs_as_torch_pruning(name):
    model = build(name)
    groups = channel_groups(model)
    gen = torch.Generator().manual_seed(2)
    plan = {g.name: sorted(torch.randperm(g.size, generator=gen)[: g.size // 10].tolist())
            for g in groups.values() if not g.refused and g.size >= 10}
    x = torch.randn(2, 3, 64, 64, generator=gen)

    ours = prune_filters(copy.deepcopy(model), plan)
    theirs = copy.deepcopy(model)
    graph = tp.DependencyGraph().build_dependency(theirs, example_inputs=x)
    modules = dict(theirs.named_modules())
    for conv, indices in plan.items():
        graph.get_pruning_group(modules[conv], tp.prune_conv_out_channels, idxs=list(indices)).prune()

    def widths(m: nn.Module) -> dict[str, tuple[int, int, int]]:
        return {n: (c.in_channels, c.out_channels, c.groups) for n, c in m.named_modules() if isinstance(c, nn.Conv2d)}

    assert widths(ours) == widths(theirs)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    torch.testing.assert_close(a, b, atol=1e-4 * float(b.abs().max()), rtol=1e-4)
