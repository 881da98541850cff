"""Criteria for channel groups: Taylor and the activation statistics against hand computations, the oracle against a
masked forward written here, norms, a criterion that sees the whole group, planning."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning_lib.measure import count_flops
from pruning_lib.plan import flops_per_channel, plan_from_scores
from pruning_lib.rank import criteria
from pruning_lib.rank.criteria import rank_all, rank_filters, register_criterion
from pruning_lib.rank.oracle import oracle, spearman
from pruning_lib.surgery import prune_filters
from test_groups import READERS, MobileLike, TinyResNet, masked, randomised


class Residual(nn.Module):
    """stem -> x; y = x + body(relu(x)); head(mean(y)): one group {stem, body}, read by body and head."""

    def __init__(self):
        super().__init__()
        self.stem, self.body, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x):
        x = self.stem(x)
        y = x + self.body(x)
        return self.head(y.mean((2, 3)))

    def masked(self, img, m):
        """The same network with a mask m (4,) on channel k wherever a reader reads it (written by hand)."""
        x = self.stem(img)
        y = x + self.body(x * m.view(1, 4, 1, 1))
        return self.head(y.mean((2, 3)) * m)


def batches(n=3, size=6, seed=0, classes=3):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, 8, 8, generator=gen), torch.randint(0, classes, (size,), generator=gen)) for _ in range(n)]


def test_group_taylor_equals_the_hand_computation():
    torch.manual_seed(0)
    model, data = Residual(), batches()
    # ∂ℓ_n/∂m_k at m = 1 for each example's own loss, |.|, averaged over examples, over the M = 8 x 8 positions of
    # the stem's map (Eq. 8's 1/M)
    per_example = []
    for x, y in data:
        for i in range(len(y)):
            m = torch.ones(4, requires_grad=True)
            loss = F.cross_entropy(model.masked(x[i:i + 1], m), y[i:i + 1])
            per_example.append(torch.autograd.grad(loss, m)[0].abs() / 64)
    want = torch.stack(per_example).mean(0)
    got = rank_filters(model, data, "taylor", normalize=None)
    assert list(got) == ["stem"]
    torch.testing.assert_close(got["stem"], want.float(), rtol=1e-4, atol=1e-7)


def test_group_activation_statistics_are_those_of_the_maps_by_hand():
    """The group {stem, body}: its channels leave their per-channel chain twice, as the stem's map x (read by body)
    and as the sum y = x + body(x) (read by the mean): mean and s.d. over every value of both; at the readers,
    over what body and the head read (x, and y's mean over positions)."""
    torch.manual_seed(0)
    model, data = Residual(), batches()
    maps, read = [], []
    with torch.no_grad():
        for img, _ in data:
            x = model.stem(img)
            y = x + model.body(x)
            maps += [x.transpose(0, 1).flatten(1), y.transpose(0, 1).flatten(1)]            # (4, values)
            read += [x.transpose(0, 1).flatten(1), y.mean((2, 3)).transpose(0, 1)]
    maps, read = torch.cat(maps, 1), torch.cat(read, 1)
    got = rank_all(model, data, ["mean_activation", "std_activation", "mean_activation_at_readers",
                                 "std_activation_at_readers"], normalize=None)
    for name, values in (("mean_activation", maps), ("mean_activation_at_readers", read)):
        torch.testing.assert_close(got[name]["stem"], values.mean(1), rtol=1e-5, atol=1e-6)
    for name, values in (("std_activation", maps), ("std_activation_at_readers", read)):
        torch.testing.assert_close(got[name]["stem"], values.std(1, unbiased=False), rtol=1e-5, atol=1e-6)


def test_a_residual_stages_maps_are_the_stems_and_every_blocks_output_before_pooling():
    """TinyResNet by hand (torch.relu after the stem, after each block's first conv and after each addition):
    the stem's group is the stem and both blocks' last convs; its maps are the stem's output and each block's output
    after the addition and the ReLU, never the pooled map.  Mean activation and APoZ of every group."""
    model, data = randomised(TinyResNet()).eval(), batches()
    maps: dict[str, list] = {g: [] for g in READERS[TinyResNet]}
    with torch.no_grad():
        for x, _ in data:
            s = torch.relu(model.stem(x))
            h1 = torch.relu(model.b1.conv1(s))
            o1 = torch.relu(model.b1.conv2(h1) + s)
            h2 = torch.relu(model.b2.conv1(o1))
            o2 = torch.relu(model.b2.conv2(h2) + o1)
            h3 = torch.relu(model.b3.conv1(o2))
            o3 = torch.relu(model.b3.conv2(h3) + model.b3.down(o2))
            for group, tensors in (("stem.0", [s, o1, o2]), ("b1.conv1.0", [h1]), ("b2.conv1.0", [h2]),
                                   ("b3.conv1.0", [h3]), ("b3.conv2.0", [o3])):
                maps[group] += [t.transpose(0, 1).flatten(1) for t in tensors]
    got = rank_all(model, data, ["mean_activation", "apoz"], normalize=None)
    for group, parts in maps.items():
        values = torch.cat(parts, 1)
        torch.testing.assert_close(got["mean_activation"][group], values.mean(1), rtol=1e-5, atol=1e-6, msg=group)
        torch.testing.assert_close(got["apoz"][group], 1 - (values == 0).float().mean(1), msg=group)


def test_group_oracle_is_the_loss_change_of_the_masked_forward():
    """The reference: the model with channel k zeroed at the input of each reader of its group, the readers written
    out by hand in test_groups.READERS (no library code)."""
    model, data = randomised(TinyResNet()).eval(), batches(n=2)

    def loss(m):
        with torch.no_grad():
            return sum(float(F.cross_entropy(m(x), y)) * len(y) for x, y in data) / sum(len(y) for _, y in data)

    measured = oracle(model, data, only=["stem.0", "b3.conv2.0"], progress=False)
    base = loss(model)
    for group in ("stem.0", "b3.conv2.0"):
        for k in (0, 3):
            reference = masked(model, {group: [k]}, READERS[TinyResNet])
            assert abs(abs(loss(reference) - base) - float(measured[group][k])) < 1e-5


@pytest.fixture
def restore_criteria():
    saved = dict(criteria.CRITERIA)
    yield
    criteria.CRITERIA.clear()
    criteria.CRITERIA.update(saved)


def test_a_criterion_that_sees_the_whole_group_batchnorm_scale(restore_criteria):
    """Network slimming (Liu et al. 2017): |γ_k| of the BatchNorm after each producer, registered from here as one
    entry and summed over the group's BatchNorms; by hand from the modules' names."""
    register_criterion("bn_scale", lambda g: sum(g.rows(bn, bn.module.weight).detach().abs() for bn in g.batchnorms),
                       needs="weights")
    model = randomised(TinyResNet()).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(-1.5, 1.5)                    # signs too: |γ| must be taken
    got = rank_filters(model, None, "bn_scale", normalize=None)
    gamma = {n: m.weight.detach().abs() for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    want = {"stem.0": gamma["stem.1"] + gamma["b1.conv2.1"] + gamma["b2.conv2.1"],
            "b1.conv1.0": gamma["b1.conv1.1"], "b2.conv1.0": gamma["b2.conv1.1"], "b3.conv1.0": gamma["b3.conv1.1"],
            "b3.conv2.0": gamma["b3.conv2.1"] + gamma["b3.down.1"]}
    assert set(got) == set(want)
    for group, scores in want.items():
        torch.testing.assert_close(got[group], scores, msg=group)
    group_parts = {}

    def keep(g):
        group_parts[g.name] = {(p.name, p.role) for p in g.parts}
        return torch.ones(g.size)

    register_criterion("parts", keep, needs="weights")
    rank_filters(model, None, "parts")
    assert group_parts["b3.conv2.0"] == {("b3.conv2.0", "out"), ("b3.conv2.1", "through"), ("b3.down.0", "out"),
                                         ("b3.down.1", "through"), ("fc", "in")}


def test_weight_norms_sum_over_the_groups_producers():
    model = TinyResNet()
    l1 = rank_filters(model, None, "l1", normalize=None)["stem.0"]
    want = sum(conv.weight.detach().abs().sum((1, 2, 3)) for conv in (model.stem[0], model.b1.conv2[0], model.b2.conv2[0]))
    torch.testing.assert_close(l1, want.float())
    assert set(rank_filters(model, None, "random")) == set(rank_filters(model, batches(), "mean_activation"))


def test_group_taylor_tracks_the_group_oracle():
    torch.manual_seed(1)
    model, data = randomised(MobileLike()).eval(), batches(n=2, size=16, classes=2)
    taylor = rank_filters(model, data, "taylor", normalize=None)
    measured = oracle(model, data, progress=False)
    rho = spearman(torch.cat([taylor[g] for g in measured]), torch.cat([measured[g] for g in measured]))
    assert rho > 0.5, rho


def test_scores_plan_and_prune_a_residual_network_end_to_end():
    model, data = randomised(TinyResNet()).eval(), batches()
    scores = rank_filters(model, data, "taylor")
    plan = plan_from_scores(scores, fraction=0.4, min_keep=2)
    before = count_flops(model, (1, 3, 8, 8))
    cost = flops_per_channel(model, (3, 8, 8))
    assert set(cost) == set(scores) and all(c > 0 for c in cost.values())
    prune_filters(model, plan)
    assert count_flops(model, (1, 3, 8, 8)) < before
    assert model.stem[0].out_channels == model.b1.conv2[0].out_channels == model.b2.conv2[0].out_channels >= 2
    model(data[0][0])


def test_unknown_group_criterion_is_named():
    with pytest.raises(ValueError, match="valid ones"):
        rank_filters(TinyResNet(), None, "taylorr")


def resnet_loaders():
    from torch.utils.data import DataLoader, TensorDataset

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 3, 8, 8, generator=gen), torch.randint(0, 3, (96,), generator=gen)
    data = TensorDataset(x, y)
    return (DataLoader(data, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0)),
            DataLoader(data, batch_size=48))


@pytest.mark.parametrize("criterion", ["taylor", "random"])
def test_prune_train_repeat_prunes_a_residual_network_by_groups(criterion, tmp_path):
    from pruning_lib.recover.iterative import PruningSchedule, prune_train_repeat

    model = randomised(TinyResNet()).eval()
    sched = PruningSchedule(criterion=criterion, filters_per_iteration=6, finetune_steps=2, lr=1e-3, rank_batches=2,
                            target_fraction=0.4, flops_lambda=0.1, seed=0)
    train_dl, val_dl = resnet_loaders()
    pruned, history = prune_train_repeat(model, train_dl, val_dl, sched, input_shape=(3, 8, 8), progress=False,
                                         checkpoint=tmp_path / "run.pt")
    assert {c for c in history.columns if c.startswith("filters:")} == {f"filters:{g}" for g in READERS_OF_TINY}
    last = history.iloc[-1]
    assert last["fraction_removed"] >= 0.3 and last["gflops"] < history.iloc[0]["gflops"]
    assert pruned.stem[0].out_channels == pruned.b2.conv2[0].out_channels == int(last["filters:stem.0"])
    again, history2 = prune_train_repeat(model, train_dl, val_dl, sched, input_shape=(3, 8, 8), progress=False,
                                         checkpoint=tmp_path / "run.pt")                # resumed: nothing to do
    x = next(iter(val_dl))[0]
    torch.testing.assert_close(again(x), pruned(x))
    assert len(history2) == len(history)


READERS_OF_TINY = ["stem.0", "b1.conv1.0", "b2.conv1.0", "b3.conv1.0", "b3.conv2.0"]


def test_ranking_leaves_the_callers_batches_as_they_were():
    model, data = randomised(TinyResNet()).eval(), batches(n=1)
    rank_filters(model, data, "taylor")
    assert not data[0][0].requires_grad
