"""The statistics pass's two places (the maps, the readers' inputs) and the one masking function.

References are written here: masks by the readers named by hand in test_groups.READERS, networks written two ways.
"""

from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning_lib import distributed
from pruning_lib.rank import criteria
from pruning_lib.rank.criteria import collect_stats, rank_all, rank_filters, register_criterion
from pruning_lib.rank.masking import masked, zeroed_where_read
from pruning_lib.rank.oracle import spearman_table
from test_groups import NETWORKS, READERS, Block, TinyResNet, conv_bn, random_plan, randomised
from test_groups import masked as masked_by_hand

DATA_CRITERIA = ["taylor", "mean_activation", "std_activation", "apoz", "mean_activation_at_readers",
                 "std_activation_at_readers", "apoz_at_readers"]


def batches(n=2, size=5, shape=(3, 8, 8), classes=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, *shape, generator=gen), torch.randint(0, classes, (size,), generator=gen))
            for _ in range(n)]


@pytest.fixture
def restore_criteria():
    saved = dict(criteria.CRITERIA)
    yield
    criteria.CRITERIA.clear()
    criteria.CRITERIA.update(saved)


# ---------------------------------------------------------------- the one masking function
@pytest.mark.parametrize("model_cls", NETWORKS, ids=lambda c: c.__name__)
def test_masked_equals_the_hand_written_masked_forward(model_cls):
    rng = random.Random(3)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        model = randomised(model_cls()).eval()
        before = copy.deepcopy(model.state_dict())
        plan, by_group = random_plan(model_cls, rng)          # each group named by a random producer
        with torch.no_grad():
            want = masked_by_hand(model, by_group, READERS[model_cls])(x)
            got = masked(model, plan)(x)
            plain = model(x)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        assert not any(m._forward_pre_hooks for m in model.modules())      # nothing left on the model
        if any(by_group.values()):
            assert not torch.allclose(plain, want)


def test_zeroed_where_read_follows_a_changing_plan_and_leaves_no_hooks():
    model = randomised(TinyResNet()).eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    plan: dict[str, list[int]] = {}
    with torch.no_grad():
        plain = model(x)
        with zeroed_where_read(model, plan):
            torch.testing.assert_close(model(x), plain)                          # an empty plan zeroes nothing
            for group, k in (("stem.0", 1), ("b3.conv2.0", 5)):
                plan.clear()
                plan[group] = [k]
                want = masked_by_hand(model, {group: [k]}, READERS[TinyResNet])(x)
                torch.testing.assert_close(model(x), want)
        assert not any(m._forward_pre_hooks for m in model.modules())
        with pytest.raises(RuntimeError, match="boom"), zeroed_where_read(model, {"stem.0": [0]}):
            raise RuntimeError("boom")
        assert not any(m._forward_pre_hooks for m in model.modules())


def test_a_wrong_mask_plan_names_the_culprit():
    model = TinyResNet()
    with pytest.raises(ValueError, match="stem.0 has 6 channels; index 6"):
        masked(model, {"stem.0": [6]})
    with pytest.raises(ValueError, match="'fc' is not a producer"):
        masked(model, {"fc": [0]})


# ---------------------------------------------------------------- metamorphic: a residual network written two ways
class ModuleBlock(Block):
    """test_groups.Block with one in-place nn.ReLU module per block, called twice (torchvision's way)."""

    def __init__(self, cin, cout, down=False):
        super().__init__(cin, cout, down)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.conv2(self.relu(self.conv1(x)))
        y += self.down(x) if self.down is not None else x
        return self.relu(y)


class ModuleReLUResNet(TinyResNet):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 6)
        self.b1, self.b2, self.b3 = ModuleBlock(6, 6), ModuleBlock(6, 6), ModuleBlock(6, 8, down=True)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.b3(self.b2(self.b1(self.relu(self.stem(x)))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def test_a_residual_network_written_two_ways_gets_the_same_scores():
    """torch.relu and out-of-place additions, or shared in-place ReLU modules and ``+=``: same maps, same reads."""
    functional = randomised(TinyResNet()).eval()
    modules = ModuleReLUResNet().eval()
    modules.load_state_dict(functional.state_dict())
    data = batches(3)
    a = rank_all(functional, data, DATA_CRITERIA, normalize=None)
    b = rank_all(modules, data, DATA_CRITERIA, normalize=None)
    for criterion in DATA_CRITERIA:
        assert set(a[criterion]) == set(READERS[TinyResNet])
        for group in a[criterion]:
            torch.testing.assert_close(b[criterion][group], a[criterion][group], rtol=1e-6, atol=1e-9,
                                       msg=f"{criterion} {group}")


def test_a_batch_split_does_not_change_the_residual_networks_scores():
    model, data = randomised(TinyResNet()).eval(), batches(1, size=12)
    x, y = data[0]
    split = [(x[:7], y[:7]), (x[7:], y[7:])]
    a, b = rank_all(model, data, DATA_CRITERIA, normalize=None), rank_all(model, split, DATA_CRITERIA, normalize=None)
    for criterion in DATA_CRITERIA:
        for group in a[criterion]:
            torch.testing.assert_close(b[criterion][group], a[criterion][group], rtol=1e-5, atol=1e-9)


# ---------------------------------------------------------------- the pass over several processes
class _OtherProcess(distributed.Collective):
    """Two processes, as this one sees them: the other one's sums are added by all_reduce."""

    world_size = 2

    def __init__(self, other: torch.Tensor) -> None:
        self.other = other

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.add_(self.other)


def test_two_processes_shards_add_up_to_one_process_seeing_both():
    model, data = randomised(TinyResNet()).eval(), batches(2, size=6)
    other = collect_stats(model, data[1:])
    flat = torch.cat([other[n].flat() for n in sorted(other)])
    both = rank_all(model, data, DATA_CRITERIA, normalize=None)
    shared = rank_all(model, data[:1], DATA_CRITERIA, normalize=None, collective=_OtherProcess(flat))
    for criterion in DATA_CRITERIA:
        for group in both[criterion]:
            torch.testing.assert_close(shared[criterion][group], both[criterion][group], rtol=1e-5, atol=1e-9)


# ---------------------------------------------------------------- every criterion through the registry
def test_a_registered_gradient_criterion_warns_like_taylor_on_a_constant_loss(restore_criteria):
    register_criterion("taylor_twice", lambda g: 2 * g.stats.taylor / g.stats.examples, needs="gradients")
    with pytest.warns(RuntimeWarning, match="every Taylor_twice score is 0"):
        rank_filters(TinyResNet(), batches(1), "taylor_twice", loss_fn=lambda out, target: out.sum() * 0)


def test_the_table_keeps_raw_the_criteria_the_registry_does_not_normalise(restore_criteria):
    register_criterion("uniform", lambda g: torch.rand(g.size, generator=g.generator), needs="weights",
                       normalize=False)
    oracle_scores = {"a": torch.tensor([10.0, 20, 30, 40]), "b": torch.tensor([1.0, 2, 3, 4])}
    scales_swapped = {"a": torch.tensor([1.0, 2, 3, 4]), "b": torch.tensor([10.0, 20, 30, 40])}
    table = spearman_table({"uniform": scales_swapped, "other": scales_swapped}, oracle_scores)
    assert table.loc["uniform", "all_layers_l2"] == pytest.approx(table.loc["uniform", "all_layers_raw"])
    assert table.loc["other", "all_layers_l2"] > table.loc["other", "all_layers_raw"]
