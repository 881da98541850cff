"""Criteria for channel groups: Taylor against a hand computation, the oracle against real surgery, norms, planning."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning_lib.rank.criteria import rank_filters
from pruning_lib.rank.oracle import oracle
from pruning_lib.measure import count_flops
from pruning_lib.rank.oracle import spearman
from pruning_lib.plan import flops_per_channel, plan_from_scores
from pruning_lib.surgery import prune_filters
from test_groups import MobileLike, TinyResNet, randomised


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


def test_group_oracle_is_the_loss_change_of_real_surgery():
    model, data = randomised(TinyResNet()).eval(), batches(n=2)

    def loss(m):
        with torch.no_grad():
            return sum(float(F.cross_entropy(m(x), y)) * len(y) for x, y in data) / sum(len(y) for _, y in data)

    measured = oracle(model, data, only=["stem.0", "b3.conv2.0"], progress=False)
    base = loss(model)
    for group in ("stem.0", "b3.conv2.0"):
        for k in (0, 3):
            pruned = prune_filters(copy.deepcopy(model), {group: [k]})
            assert abs(abs(loss(pruned) - base) - float(measured[group][k])) < 1e-5


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
