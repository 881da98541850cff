"""Channel groups and group surgery: residual additions, concatenation, depthwise convs, squeeze-excite.

Exactness is checked against an independent masked reference written here: the original model with the
removed channels set to zero where each channel-mixing layer (conv, Linear) reads them.  Which layers read
which channels is written out by hand for every test network (``READERS``), not taken from the library.
"""

from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn as nn

from pruning_lib.checkpoints import save_pruned
from pruning_lib.surgery import load_pruned
from pruning_lib.surgery import validate_plan
from pruning_lib.graph.groups import channel_groups, describe, group_of
from pruning_lib.surgery import prune_filters, with_widths


def conv_bn(cin, cout, k=3, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout))


class Block(nn.Module):
    """A ResNet basic block; with `down`, a 1x1 conv + BN on the shortcut (a new group starts)."""

    def __init__(self, cin, cout, down=False):
        super().__init__()
        self.conv1, self.conv2 = conv_bn(cin, cout), conv_bn(cout, cout)
        self.down = conv_bn(cin, cout, k=1) if down else None

    def forward(self, x):
        y = self.conv2(torch.relu(self.conv1(x)))
        return torch.relu(y + (self.down(x) if self.down is not None else x))


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 6)
        self.b1, self.b2, self.b3 = Block(6, 6), Block(6, 6), Block(6, 8, down=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.b3(self.b2(self.b1(torch.relu(self.stem(x)))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class DenseLike(nn.Module):
    """DenseNet-style: each layer reads the concatenation of everything before it; a Linear on the flattened map."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(7)
        self.c = nn.Conv2d(7, 5, 1)
        self.fc = nn.Linear(12 * 4, 2)

    def forward(self, x):
        a = torch.relu(self.a(x))
        ab = torch.cat([a, torch.relu(self.b(a))], dim=1)
        abc = torch.cat([ab, self.c(torch.relu(self.bn(ab)))], dim=1)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(abc, 2), 1))


class Inverted(nn.Module):
    """MobileNetV2's inverted residual: expand (1x1) -> depthwise (3x3) -> squeeze-excite -> project (1x1), + input."""

    def __init__(self, c=4, e=8):
        super().__init__()
        self.expand, self.dw, self.project = conv_bn(c, e, 1), conv_bn(e, e, 3, groups=e), conv_bn(e, c, 1)
        self.se1, self.se2 = nn.Conv2d(e, 2, 1), nn.Conv2d(2, e, 1)

    def forward(self, x):
        h = nn.functional.relu6(self.dw(nn.functional.relu6(self.expand(x))))
        h = h * torch.sigmoid(self.se2(torch.relu(self.se1(h.mean((2, 3), keepdim=True)))))
        return x + self.project(h)


class MobileLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 4)
        self.block1, self.block2 = Inverted(), Inverted()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = self.block2(self.block1(torch.relu(self.stem(x))))
        return self.head(x.mean((2, 3)))


class ViewFlatten(nn.Module):
    """The seed's idiom: x.view(x.size(0), -1) (and x.reshape(x.shape[0], -1)) before the classifier."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.fc = conv_bn(3, 4), nn.Conv2d(4, 5, 3, padding=1), nn.Linear(5 * 4 * 4, 2)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.b(torch.relu(self.a(x)))), 2)
        h = x.view(x.size(0), -1)
        return self.fc(h.reshape(h.shape[0], -1))


# By hand: each group's producers (convs whose rows go) and readers ((module, offset, span): input columns).
READERS = {
    TinyResNet: {
        "stem.0": (["stem.0", "b1.conv2.0", "b2.conv2.0"], [("b1.conv1.0", 0, 1), ("b2.conv1.0", 0, 1),
                                                            ("b3.conv1.0", 0, 1), ("b3.down.0", 0, 1)]),
        "b1.conv1.0": (["b1.conv1.0"], [("b1.conv2.0", 0, 1)]),
        "b2.conv1.0": (["b2.conv1.0"], [("b2.conv2.0", 0, 1)]),
        "b3.conv1.0": (["b3.conv1.0"], [("b3.conv2.0", 0, 1)]),
        "b3.conv2.0": (["b3.conv2.0", "b3.down.0"], [("fc", 0, 1)]),
    },
    DenseLike: {
        "a": (["a"], [("b", 0, 1), ("c", 0, 1), ("fc", 0, 4)]),
        "b": (["b"], [("c", 4, 1), ("fc", 4, 4)]),
        "c": (["c"], [("fc", 7, 4)]),
    },
    ViewFlatten: {
        "a.0": (["a.0"], [("b", 0, 1)]),
        "b": (["b"], [("fc", 0, 16)]),
    },
    MobileLike: {
        "stem.0": (["stem.0", "block1.project.0", "block2.project.0"],
                   [("block1.expand.0", 0, 1), ("block2.expand.0", 0, 1), ("head", 0, 1)]),
        "block1.expand.0": (["block1.expand.0", "block1.se2"], [("block1.se1", 0, 1), ("block1.project.0", 0, 1)]),
        "block1.se1": (["block1.se1"], [("block1.se2", 0, 1)]),
        "block2.expand.0": (["block2.expand.0", "block2.se2"], [("block2.se1", 0, 1), ("block2.project.0", 0, 1)]),
        "block2.se1": (["block2.se1"], [("block2.se2", 0, 1)]),
    },
}
NETWORKS = list(READERS)


def randomised(model: nn.Module, dtype=torch.float32) -> nn.Module:
    """Random weights and BatchNorm statistics far from the defaults, so a wrong slice shows."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-1, 1)
    return model.to(dtype)


def masked(model: nn.Module, plan_by_group: dict[str, list[int]], readers: dict) -> nn.Module:
    """The reference: a copy that zeroes the removed channels in the inputs of their readers."""
    ref = copy.deepcopy(model)
    modules = dict(ref.named_modules())
    zero: dict[str, list[int]] = {}
    for group, ks in plan_by_group.items():
        for module, offset, span in readers[group][1]:
            zero.setdefault(module, []).extend(c for k in ks for c in range((offset + k) * span, (offset + k + 1) * span))

    def hook(columns):
        def pre(_, args):
            x = args[0].clone()
            x[:, columns] = 0
            return (x,)
        return pre

    for module, columns in zero.items():
        modules[module].register_forward_pre_hook(hook(columns))
    return ref


def random_plan(model_cls, rng: random.Random) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """A random plan over every group, each named by a random producer: (plan, channels by group)."""
    sizes = {name: g.size for name, g in channel_groups(randomised(model_cls())).items()}
    by_group = {g: sorted(rng.sample(range(sizes[g]), rng.randint(0, sizes[g] - 1))) for g in READERS[model_cls]}
    plan = {rng.choice(READERS[model_cls][g][0]): ks for g, ks in by_group.items()}
    return plan, by_group


@pytest.mark.parametrize("model_cls", NETWORKS, ids=lambda c: c.__name__)
def test_groups_match_the_hand_written_ones(model_cls):
    groups = channel_groups(model_cls())
    assert not any(g.refused for g in groups.values()), describe(groups)
    got = {name: (sorted(g.producers), sorted({(m.module, m.offset, m.span) for m in g.members if m.role in ("in", "linear")}))
           for name, g in groups.items()}
    want = {name: (sorted(p), sorted(r)) for name, (p, r) in READERS[model_cls].items()}
    assert got == want
    assert group_of(groups)["b3.down.0" if model_cls is TinyResNet else next(iter(want))] in want


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("model_cls", NETWORKS, ids=lambda c: c.__name__)
def test_group_surgery_equals_the_masked_reference(model_cls, train, dtype):
    rng = random.Random(7)
    for trial in range(4):
        model = randomised(model_cls(), dtype).train(train)
        plan, by_group = random_plan(model_cls, rng)
        ref = masked(model, by_group, READERS[model_cls]).train(train)
        x = torch.randn(4, 3, 8, 8, dtype=dtype)
        pruned = prune_filters(copy.deepcopy(model), plan)
        assert pruned.training == train and all(p.dtype == dtype for p in pruned.parameters())
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(pruned(x), ref(x), atol=tol, rtol=tol)
        removed = sum(len(ks) for ks in by_group.values())
        assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters()) or not removed


def test_depthwise_convs_shrink_with_their_group():
    model = randomised(MobileLike()).eval()
    prune_filters(model, {"block1.se2": [0, 5, 7]})          # any member names the group
    dw = model.block1.dw[0]
    assert (dw.in_channels, dw.out_channels, dw.groups, tuple(dw.weight.shape)) == (5, 5, 5, (5, 1, 3, 3))
    assert model.block1.expand[0].out_channels == 5 and model.block1.project[0].in_channels == 5
    assert model.block1.se1.in_channels == 5 and model.block1.se2.out_channels == 5
    model(torch.randn(2, 3, 8, 8))


def test_naming_the_depthwise_conv_names_its_group():
    a = randomised(MobileLike()).eval()
    b = copy.deepcopy(a)
    prune_filters(a, {"block1.dw.0": [1, 2]})
    prune_filters(b, {"block1.expand.0": [1, 2]})
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(a(x), b(x), atol=0, rtol=0)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def unchanged(model, before):
    after = model.state_dict()
    return before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_two_members_with_different_channels_are_refused_naming_both():
    model = TinyResNet()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"stem\.0 and b1\.conv2\.0 are in the same channel group"):
        prune_filters(model, {"stem.0": [1], "b1.conv2.0": [2]})
    assert unchanged(model, before)
    prune_filters(model, {"stem.0": [1], "b1.conv2.0": [1]})          # the same channels: fine
    assert model.b2.conv2[0].out_channels == 5


def test_a_plan_that_empties_a_group_is_refused():
    model = TinyResNet()
    before = snapshot(model)
    with pytest.raises(ValueError, match="at most 5"):
        prune_filters(model, {"stem.0": list(range(6))})
    assert unchanged(model, before)


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.g, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.b(self.g(self.a(x)))


def test_grouped_convs_are_refused_clearly_and_the_rest_prunes():
    model = Grouped()
    before = snapshot(model)
    for conv in ("a", "g"):
        with pytest.raises(NotImplementedError, match="grouped conv"):
            prune_filters(model, {conv: [0]})
        assert unchanged(model, before)
    groups = channel_groups(model)
    assert "groups=2" in groups["a"].refused and groups["g"].refused


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.a(x) if x.sum() > 0 else x


def test_an_untraceable_model_names_the_call():
    with pytest.raises(NotImplementedError, match=r"test_groups\.py:\d+ `return self\.a\(x\) if x\.sum\(\) > 0 else x`.*torch\.where"):
        channel_groups(Untraceable())


def test_save_and_load_a_pruned_residual_network(tmp_path):
    model = randomised(MobileLike()).eval()
    prune_filters(model, {"stem.0": [0], "block1.expand.0": [2, 3, 4], "block2.se1": [1]})
    path = save_pruned(model, tmp_path / "mobile.pt")
    loaded, _ = load_pruned(path, MobileLike())
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(loaded.eval()(x), model(x), atol=0, rtol=0)
    assert loaded.block1.dw[0].groups == 5


def test_requires_grad_and_device_are_kept():
    model = randomised(TinyResNet()).eval()
    for p in model.stem.parameters():
        p.requires_grad_(False)
    prune_filters(model, {"b1.conv2.0": [1, 2]})
    assert not any(p.requires_grad for p in model.stem.parameters())
    assert all(p.requires_grad for p in model.b3.parameters()) and not model.training


def test_with_widths_refuses_widths_that_do_not_fit():
    with pytest.raises(ValueError, match="same channel group"):
        with_widths(TinyResNet(), {"stem.0": 4, "b1.conv2.0": 4, "b2.conv2.0": 5})
    with pytest.raises(ValueError, match="do not fit together"):
        with_widths(MobileLike(), {"block1.dw.0": 5})
    assert with_widths(MobileLike(), {"block1.expand.0": 5, "block1.se2": 5, "block1.dw.0": 5}).block1.dw[0].groups == 5


def test_validation_reports_group_channels():
    removed = validate_plan(DenseLike(), {"b": [0, 2], "a": []})
    assert removed == {"b": [0, 2]}


class ViewLiteral(ViewFlatten):
    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.b(torch.relu(self.a(x)))), 2)
        return self.fc(x.view(2, -1))           # a literal batch size could merge examples: not trusted


def test_a_view_with_a_literal_batch_size_is_refused():
    assert "view" in channel_groups(ViewLiteral())["b"].refused
    with pytest.raises(NotImplementedError, match="view"):
        prune_filters(ViewLiteral(), {"b": [0]})
