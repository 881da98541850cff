"""One engine: a model written two ways gets the same answer, or a clear refusal.

Each test here would have failed on the old library (commit 0d86d18), which had two engines that disagreed: a
chain walker with its own statistics and slicing, and a group tracer with its own, joined by a fallback on
exception.  The exceptions, kept as guards, say so in their docstrings.  References are computed without the
library: masks written by hand by module name, Taylor by hand.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from conftest import zeroed_where_read
from pruning_lib.graph import layer_types
from pruning_lib.graph.groups import channel_groups, group_of, group_widths
from pruning_lib.graph.layer_types import PASSES, LayerType, register_layer_type
from pruning_lib.rank.criteria import CRITERIA, rank_filters
from pruning_lib.rank.oracle import oracle
from pruning_lib.surgery import prune_filters

DATA_CRITERIA = ["taylor", "mean_activation", "std_activation", "apoz", "mean_activation_at_readers",
                 "std_activation_at_readers", "apoz_at_readers"]
ALL_CRITERIA = [*DATA_CRITERIA, "l1", "l2", "random"]


# ---------------------------------------------------------------- test-side references
def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Eval mode, with BatchNorm statistics and affine parameters (and PReLU slopes) drawn at random."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                if m.running_mean is not None:
                    m.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
                    m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=gen) * 0.5)
            elif isinstance(m, nn.PReLU):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) - 0.5)
    return model.eval()


def batches(sizes, shape=(3, 8, 8), classes=3, seed=1):
    gen = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    x, y = torch.randn(n, *shape, generator=gen), torch.randint(0, classes, (n,), generator=gen)
    return [(xb, yb) for xb, yb in zip(x.split(list(sizes)), y.split(list(sizes)))]


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    after = model.state_dict()
    return after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)


# ---------------------------------------------------------------- a. one chain, three ways to write its ReLUs
class Chain(nn.Module):
    """conv1 (3→8) → BN → ReLU → pool, conv2 (8→6) → BN → ReLU → pool, conv3 (6→5) → BN → ReLU, flatten, Linear.
    The subclasses differ only in how the ReLU is written (`act`); the state dicts have the same keys."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.conv3, self.bn3 = nn.Conv2d(6, 5, 3, padding=1), nn.BatchNorm2d(5)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(5 * 2 * 2, 3)

    def forward(self, x):                                          # (N, 3, 8, 8)
        x = self.pool(self.act(1, self.bn1(self.conv1(x))))
        x = self.pool(self.act(2, self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(self.act(3, self.bn3(self.conv3(x))), 1))


class SharedReLU(Chain):
    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU()

    def act(self, i, x):
        return self.relu(x)                                        # one module, called after every conv


class ReLUPerConv(Chain):
    def __init__(self):
        super().__init__()
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()

    def act(self, i, x):
        return getattr(self, f"relu{i}")(x)


class FunctionalReLU(Chain):
    def act(self, i, x):
        return F.relu(x)


CHAIN_READERS = {"conv1": "conv2", "conv2": "conv3", "conv3": "fc"}
CHAIN_WIDTHS = {"conv1": 8, "conv2": 6, "conv3": 5}


def three_chains():
    torch.manual_seed(0)
    first = randomize(SharedReLU())
    others = [ReLUPerConv(), FunctionalReLU()]
    for m in others:
        m.load_state_dict(first.state_dict())
    return [first] + [m.eval() for m in others]


def test_a_chain_written_three_ways_gets_the_same_scores_oracle_and_pruning():
    """Old bug: the chain walker read each conv's map at the output of its activation module: with `F.relu`
    ranking was refused ("use nn.ReLU modules"), and one `self.relu` called after every conv gave all three convs
    the scores of conv3's map (5 values for conv1's 8 filters)."""
    assert set(ALL_CRITERIA) <= set(CRITERIA)
    models, data = three_chains(), batches([6, 6])
    for criterion in ALL_CRITERIA:
        scores = [rank_filters(m, data, criterion, normalize=None) for m in models]
        for got in scores:
            assert {n: len(s) for n, s in got.items()} == CHAIN_WIDTHS, criterion
            for name in CHAIN_WIDTHS:
                torch.testing.assert_close(got[name], scores[0][name], rtol=1e-6, atol=0, msg=f"{criterion} {name}")
        assert all(bool((s > 0).any()) for s in scores[0].values()), criterion   # not a vacuous agreement
    oracles = [oracle(m, data, progress=False) for m in models]
    for got in oracles:
        assert {n: len(s) for n, s in got.items()} == CHAIN_WIDTHS
        for name in CHAIN_WIDTHS:
            torch.testing.assert_close(got[name], oracles[0][name], rtol=1e-6, atol=0)

    gen = torch.Generator().manual_seed(5)
    plan = {n: sorted(torch.randperm(w, generator=gen)[: 1 + int(torch.randint(w - 1, (1,), generator=gen))].tolist())
            for n, w in CHAIN_WIDTHS.items()}
    x = torch.randn(4, 3, 8, 8, generator=gen)
    for model in models:
        want = zeroed_where_read(model, plan, CHAIN_READERS, x)
        pruned = prune_filters(copy.deepcopy(model), plan)
        with torch.no_grad():
            torch.testing.assert_close(pruned(x), want, atol=1e-5, rtol=1e-4)
        assert {n: getattr(pruned, n).out_channels for n in CHAIN_WIDTHS} == {
            n: w - len(plan[n]) for n, w in CHAIN_WIDTHS.items()}


# ---------------------------------------------------------------- b. a block's first conv in a torchvision ResNet
def test_resnet18_block_conv1_taylor_is_read_at_conv2s_input():
    """Old bug: the first conv of each BasicBlock was scored on the post-addition stream (the output of the
    block's shared `relu`, whose last call is after the addition), not on the map conv2 reads."""
    torch.manual_seed(0)
    model = randomize(torchvision.models.resnet18(num_classes=3))
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(2, 3, 32, 32, generator=gen), torch.randint(0, 3, (2,), generator=gen)
    blocks = [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    modules = dict(model.named_modules())

    read = {}

    def keep(block):
        def pre_hook(module, args):
            read[block] = args[0].view_as(args[0])          # r, conv2's input, as its own autograd node
            return (read[block],)
        return pre_hook

    hooks = [modules[f"{b}.conv2"].register_forward_pre_hook(keep(b)) for b in blocks]
    try:
        out = model(x)
    finally:
        for h in hooks:
            h.remove()
    # the sum of the examples' losses: its gradient at example n's map is that of ℓ_n alone
    grads = torch.autograd.grad(F.cross_entropy(out, y, reduction="sum"), [read[b] for b in blocks])
    got = rank_filters(model, [(x, y)], "taylor", normalize=None)
    for block, g in zip(blocks, grads):
        r = read[block].detach()
        positions = r.shape[2] * r.shape[3]                    # M: conv1's output (bn1 and relu keep its size)
        want = ((g * r).sum(dim=(2, 3)).abs() / positions).mean(dim=0)
        torch.testing.assert_close(got[f"{block}.conv1"], want, rtol=1e-4, atol=1e-8, msg=block)


# ---------------------------------------------------------------- c. ragged batches
def test_the_same_examples_batched_three_ways_get_the_same_scores():
    """Old bug: Taylor took the gradient of the batch-mean loss, so an example in a batch of 8 weighed 10/8 of
    one in a batch of 10: the scores depended on how the data was cut into batches."""
    model = three_chains()[0]
    ways = [batches(sizes) for sizes in ([18], [6, 6, 6], [10, 8])]
    for criterion in DATA_CRITERIA:
        first, *others = [rank_filters(model, data, criterion, normalize=None) for data in ways]
        for got in others:
            for name in CHAIN_WIDTHS:
                torch.testing.assert_close(got[name], first[name], rtol=1e-5, atol=1e-9, msg=f"{criterion} {name}")
    first, *others = [oracle(model, data, progress=False) for data in ways]
    for got in others:
        for name in CHAIN_WIDTHS:
            torch.testing.assert_close(got[name], first[name], rtol=1e-5, atol=1e-6)   # float32 losses ~1


# ---------------------------------------------------------------- d. the in-place guard
class InPlaceScale(nn.Module):
    """Doubles its input in place: registered as a leaf, torch.fx sees a module call, not the `mul_`."""

    def forward(self, x):
        return x.mul_(2.0)


class ReadThenChanged(nn.Module):
    """conv2 reads r; then `scale` changes r in place (conv3 reads the changed r); conv2 + conv3 go to the head."""

    def __init__(self, scale: nn.Module):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.conv3 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.scale = scale
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        r = self.bn1(self.conv1(x))
        a = self.conv2(r)
        b = self.scale(r)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(a + self.conv3(b), 1), 1))


@pytest.fixture
def restore_layer_types():
    saved = dict(layer_types.LAYER_TYPES)
    yield
    layer_types.LAYER_TYPES.clear()
    layer_types.LAYER_TYPES.update(saved)


@pytest.mark.parametrize("how", [
    "leaky_relu_inplace",                                                   # a torch.nn leaf: fx sees a module call
    "registered_custom_leaf",
])
@pytest.mark.parametrize("criterion", ["taylor", "mean_activation"])
def test_an_input_changed_in_place_after_its_reader_read_it_is_refused(how, criterion, restore_layer_types):
    """Old bug: no guard.  The group engine silently gave conv1 a Taylor score of 0 for every channel, and
    activation statistics of the doubled map, which conv2 never read (the chain engine could not rank it at all)."""
    if how == "registered_custom_leaf":
        register_layer_type(InPlaceScale, LayerType(PASSES))
        scale = InPlaceScale()
    else:
        scale = nn.LeakyReLU(0.1, inplace=True)
    torch.manual_seed(0)
    model = randomize(ReadThenChanged(scale))
    with pytest.raises(RuntimeError, match=r"input of conv2 was changed in place"):
        rank_filters(model, batches([4]), criterion)


# ---------------------------------------------------------------- e. layer variants
def two_convs(middle1: dict, middle2: dict, *, bias: bool = True) -> nn.Module:
    """conv1 (3→6) → middle1 → conv2 (6→5) → middle2 → pool → flatten → fc, by name."""
    layers = {"conv1": nn.Conv2d(3, 6, 3, padding=1, bias=bias), **middle1,
              "conv2": nn.Conv2d(6, 5, 3, padding=1, bias=bias), **middle2,
              "pool": nn.AdaptiveAvgPool2d(2), "flat": nn.Flatten(), "fc": nn.Linear(5 * 4, 3)}
    torch.manual_seed(0)
    return randomize(nn.Sequential(OrderedDict(layers)))


VARIANTS = {
    "batchnorm_affine_false": lambda: two_convs(
        {"bn1": nn.BatchNorm2d(6, affine=False), "relu1": nn.ReLU()},
        {"bn2": nn.BatchNorm2d(5, affine=False), "relu2": nn.ReLU()}),
    "batchnorm_batch_statistics": lambda: two_convs(                   # in eval mode too: per channel, still exact
        {"bn1": nn.BatchNorm2d(6, track_running_stats=False), "relu1": nn.ReLU()},
        {"bn2": nn.BatchNorm2d(5, track_running_stats=False), "relu2": nn.ReLU()}),
    "batchnorm_neither": lambda: two_convs(                            # no tensors at all: only num_features
        {"bn1": nn.BatchNorm2d(6, affine=False, track_running_stats=False), "relu1": nn.ReLU()},
        {"bn2": nn.BatchNorm2d(5, affine=False, track_running_stats=False), "relu2": nn.ReLU()}),
    "convs_without_bias": lambda: two_convs(
        {"bn1": nn.BatchNorm2d(6), "relu1": nn.ReLU()}, {"bn2": nn.BatchNorm2d(5), "relu2": nn.ReLU()}, bias=False),
    "prelu_per_channel": lambda: two_convs(
        {"bn1": nn.BatchNorm2d(6), "prelu1": nn.PReLU(6)}, {"prelu2": nn.PReLU(5)}),
    "depthwise": lambda: two_convs(
        {"bn1": nn.BatchNorm2d(6), "relu1": nn.ReLU(), "dw": nn.Conv2d(6, 6, 3, padding=1, groups=6),
         "bn_dw": nn.BatchNorm2d(6), "relu_dw": nn.ReLU()},
        {"relu2": nn.ReLU()}),
}
VARIANT_READERS = {"conv1": "conv2", "conv2": "fc"}        # the depthwise conv passes conv1's channels to conv2


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_layer_variants_prune_exactly_and_rank(variant):
    """Old bugs: prune_filters refused PReLU(C) ("couples channels"); rank_filters left conv1 out of the depthwise
    model (the chain walker refused it); a BatchNorm with neither affine parameters nor running statistics kept
    its old num_features.  (BatchNorm with only one of the two, and convs without bias, passed before too.)"""
    model = VARIANTS[variant]()
    plan = {"conv1": [1, 4], "conv2": [0, 3]}
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    want = zeroed_where_read(model, plan, VARIANT_READERS, x)
    pruned = prune_filters(copy.deepcopy(model), plan)
    with torch.no_grad():
        got = pruned(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    for name, module in pruned.named_children():              # every per-channel layer shrank with its conv
        if isinstance(module, nn.BatchNorm2d):
            assert module.num_features == (4 if name in ("bn1", "bn_dw") else 3), name
        if isinstance(module, nn.PReLU):
            assert module.num_parameters == module.weight.numel() == (4 if name == "prelu1" else 3), name
    if variant == "depthwise":
        assert (pruned.dw.in_channels, pruned.dw.out_channels, pruned.dw.groups) == (4, 4, 4)

    data = batches([5, 3])
    for criterion in ALL_CRITERIA:
        scores = rank_filters(model, data, criterion)
        assert {n: len(s) for n, s in scores.items()} == {"conv1": 6, "conv2": 5}, criterion
        assert all(bool(torch.isfinite(s).all()) for s in scores.values()), criterion


def test_a_grouped_conv_is_refused_and_the_model_left_unchanged():
    """The old library refused it too (its chain walker, then its group engine after the fallback); kept so that
    the one engine keeps the refusal, naming the module, with the model untouched."""
    model = two_convs({"bn1": nn.BatchNorm2d(6), "relu1": nn.ReLU(), "gconv": nn.Conv2d(6, 6, 3, padding=1, groups=2),
                       "relu_g": nn.ReLU()}, {})
    before = state(model)
    for conv in ("conv1", "gconv"):                           # the group it reads, and the group it makes
        with pytest.raises(NotImplementedError, match=r"gconv.*grouped"):
            prune_filters(model, {conv: [0]})
        assert same_state(model, before)
    assert model.conv1.out_channels == 6 and model.gconv.in_channels == 6


def test_validate_plan_accepts_every_plan_prune_filters_carries_out_on_a_resnet():
    """Old bug: the public validate_plan was the chain engine's and rejected ResNet plans that prune_filters carried
    out (through its fallback to the group engine).  Now both are one function: same plan, same groups."""
    from pruning_lib.surgery import validate_plan

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    groups = channel_groups(model)
    gen = torch.Generator().manual_seed(0)
    plan = {g.producers[-1]: sorted(torch.randperm(g.size, generator=gen)[:3].tolist())   # any producer names its group
            for g in groups.values() if not g.refused}
    removals = validate_plan(model, plan)
    assert removals == {group_of(groups)[conv]: idx for conv, idx in plan.items()}
    pruned = prune_filters(copy.deepcopy(model), plan)
    assert {n: w - 3 for n, w in group_widths(model).items()} == group_widths(pruned)
