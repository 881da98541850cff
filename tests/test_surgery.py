"""Surgery is exact, atomic, and refuses what it cannot do exactly."""

import copy

import numpy as np

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from pruning_lib.checkpoints import save_pruned
from pruning_lib.surgery import load_pruned
from pruning_lib.graph.groups import channel_groups, group_widths
from conftest import zeroed_where_read
from pruning_lib.plan import plan_from_scores
from pruning_lib.surgery import prune_filters


# ---------------------------------------------------------------- models under test
def chain(bn=True, dtype=torch.float32, adaptive=True):
    """A plain nn.Sequential chain with every supported layer kind."""
    layers = [nn.Conv2d(3, 8, 3, padding=1, bias=not bn)]
    layers += [nn.BatchNorm2d(8)] if bn else []
    layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Conv2d(8, 12, 3, padding=1)]
    layers += [nn.BatchNorm2d(12)] if bn else []
    layers += [nn.LeakyReLU(0.1), nn.Dropout2d(0.1), nn.Conv2d(12, 6, 3, padding=1), nn.Tanh()]
    layers += [nn.AdaptiveAvgPool2d((3, 2))] if adaptive else [nn.AvgPool2d(2)]
    layers += [nn.Flatten(), nn.Linear(6 * 6 if adaptive else 6 * 16, 10), nn.ReLU(), nn.Dropout(0.2), nn.Linear(10, 4)]
    model = nn.Sequential(*layers).to(dtype)
    _randomize_bn(model)
    return model.eval()


class FunctionalNet(nn.Module):
    """Convs in a custom module with functional relu, pooling and torch.flatten."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 5, 3)
        self.c2 = nn.Conv2d(5, 7, 3)
        self.fc = nn.Linear(7 * 4 * 4, 3)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = torch.relu(self.c2(x))
        return self.fc(torch.flatten(x, 1))


def _randomize_bn(model):
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen))
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=gen))
            m.bias.data.copy_(torch.randn(n, generator=gen))


def random_plan(model, seed, max_fraction=0.8):
    gen = torch.Generator().manual_seed(seed)
    plan = {}
    for name, n in group_widths(model).items():
        k = int(torch.randint(0, max(1, int(n * max_fraction)), (1,), generator=gen))
        plan[name] = sorted(torch.randperm(n, generator=gen)[:k].tolist())
    return plan


# ---------------------------------------------------------------- independent reference
def consumers_in_order(model):
    """Test-side consumer map: the next Conv2d/Linear in module order (true for chain models); a hidden Linear's
    units are read by the next Linear."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return {n: layers[i + 1][0] for i, (n, m) in enumerate(layers[:-1])}


def masked_reference(model, plan, *, inplace=False):
    """A copy of `model` (or `model` itself) where the removed channels are zeroed at the input of their consumer."""
    ref = model if inplace else copy.deepcopy(model)
    modules = dict(ref.named_modules())
    for name, removed in plan.items():
        channels = modules[name].weight.shape[0]
        mask = torch.ones(channels, dtype=modules[name].weight.dtype)
        mask[removed] = 0
        consumer = modules[consumers_in_order(ref)[name]]

        def zero(mod, inputs, mask=mask, channels=channels):
            x = inputs[0]
            if x.dim() == 2:  # flattened, channel-major
                return ((x.view(len(x), channels, -1) * mask.view(1, -1, 1)).flatten(1),)
            return (x * mask.view(1, -1, 1, 1),)

        consumer.register_forward_pre_hook(zero)
    return ref


def assert_exact(model, plan, x, atol=1e-5):
    ref = masked_reference(model, plan)
    pruned = prune_filters(copy.deepcopy(model), plan)
    with torch.no_grad():
        expected, got = ref(x), pruned(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=atol, rtol=1e-4)
    return pruned


# ---------------------------------------------------------------- exactness
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("bn", [True, False])
@pytest.mark.parametrize("adaptive", [True, False])
def test_chain_is_exact(seed, bn, adaptive):
    model = chain(bn=bn, adaptive=adaptive)
    pruned = assert_exact(model, random_plan(model, seed), torch.randn(4, 3, 16, 16))
    for name, n in group_widths(pruned).items():
        assert n == group_widths(model)[name] - len(random_plan(model, seed)[name])


def test_float64_is_exact_to_rounding():
    model = chain(dtype=torch.float64)
    pruned = assert_exact(model, random_plan(model, 1), torch.randn(3, 3, 16, 16, dtype=torch.float64), atol=1e-12)
    assert all(p.dtype == torch.float64 for p in pruned.parameters())


def test_functional_model_is_exact():
    model = FunctionalNet().eval()
    assert list(group_widths(model)) == ["c1", "c2"]
    assert_exact(model, {"c1": [0, 3], "c2": [1, 2, 6]}, torch.randn(2, 1, 14, 14))


@pytest.mark.parametrize("seed", range(3))
def test_torchvision_vgg_bn_is_exact(seed):
    torch.manual_seed(seed)
    model = torchvision.models.vgg11_bn(num_classes=3).eval()
    _randomize_bn(model)
    plan = random_plan(model, seed)
    assert_exact(model, plan, torch.randn(2, 3, 32, 32), atol=1e-4)


def test_pruning_an_already_pruned_model():
    model = chain()
    once = prune_filters(copy.deepcopy(model), random_plan(model, 3, max_fraction=0.5))
    assert_exact(once, random_plan(once, 4, max_fraction=0.5), torch.randn(4, 3, 16, 16))


def test_prune_returns_same_object_and_keeps_module_state():
    model = chain().train()
    model[0].weight.requires_grad_(False)
    model[5].eval()  # a BN left in eval mode on purpose
    out = prune_filters(model, {"0": [1, 2], "4": [0]})
    assert out is model
    assert model.training and not model[5].training
    assert not model[0].weight.requires_grad and model[4].weight.requires_grad
    assert (model[0].out_channels, model[1].num_features, model[4].in_channels) == (6, 6, 6)
    assert model[1].running_mean.shape == (6,) and model[5].num_features == 11


def test_pruned_model_trains():
    model = chain().train()
    prune_filters(model, random_plan(model, 5))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 4, (16,))
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())


def test_last_conv_shrinks_first_linear():
    model = torchvision.models.vgg16(num_classes=2)
    prune_filters(model, {"features.28": list(range(256))})
    assert model.classifier[0].in_features == 256 * 7 * 7
    assert model.features[28].out_channels == 256


# ---------------------------------------------------------------- atomic, clear failures
def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [id(p) for p in model.parameters()]


@pytest.mark.parametrize(
    "plan, error, words",
    [
        ({"nope": [0]}, KeyError, "not a module"),
        ({"2": [0]}, ValueError, "not a layer that makes channels"),
        ({"0": [1, 1]}, ValueError, "duplicate"),
        ({"0": [-1]}, ValueError, "out of range"),
        ({"0": [8]}, ValueError, "0..7"),
        ({"0": list(range(8))}, ValueError, "not all"),
        ({"0": [0.5]}, ValueError, "must be ints"),
        ({"4": [0], "8": [99]}, ValueError, "8 has 6 filters"),  # a good entry before a bad one
    ],
)
def test_bad_plan_raises_and_leaves_model_untouched(plan, error, words):
    model = chain()
    before, ids = snapshot(model)
    with pytest.raises(error, match=words):
        prune_filters(model, plan)
    after, ids_after = snapshot(model)
    assert ids == ids_after and before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model[0].out_channels == 8


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.body(x)
        return self.head(x.mean(dim=(2, 3)))


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 3, padding=1)
        self.c = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.c(torch.cat([self.a(x), self.b(x)], dim=1))


@pytest.mark.parametrize(
    "model, conv, words",
    [
        (nn.Sequential(nn.Conv2d(3, 4, 3, groups=1), nn.Conv2d(4, 4, 3, groups=2)), "1", "grouped"),
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), "0", "model's output"),
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(6, 2)), "0", "couples channels"),
    ],
)
def test_unsupported_couplings_raise_not_implemented(model, conv, words):
    before, _ = snapshot(model)
    assert conv not in group_widths(model)
    with pytest.raises(NotImplementedError, match=words):
        prune_filters(model, {conv: [0]})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_residual_concat_and_depthwise_prune_through_their_channel_groups():
    """Refused as chains, these go to group surgery (tests/test_groups.py proves it exact on larger networks)."""
    x = torch.randn(2, 3, 6, 6)
    model = Residual()
    ref = copy.deepcopy(model)
    for reader in (ref.body, ref.head):                  # channel 1 of the sum, zeroed where it is read
        reader.register_forward_pre_hook(lambda _, a: (a[0] * torch.tensor([1.0, 0, 1, 1]).view(1, 4, *[1] * (a[0].dim() - 2)),))
    prune_filters(model, {"body": [1]})
    assert (model.stem.out_channels, model.body.in_channels, model.body.out_channels, model.head.in_features) == (3, 3, 3, 3)
    torch.testing.assert_close(model(x), ref(x))
    concat = Concat()
    prune_filters(concat, {"b": [0, 3]})
    assert concat.c.in_channels == 6 and concat(x).shape == (2, 2, 6, 6)
    dw = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3, groups=4), nn.Flatten(), nn.Linear(4, 2))
    prune_filters(dw, {"0": [2]})
    assert (dw[1].in_channels, dw[1].out_channels, dw[1].groups, dw[3].in_features) == (3, 3, 3, 3)


def test_every_conv_and_hidden_linear_of_vgg16_is_a_group_with_one_producer_and_one_reader():
    model = torchvision.models.vgg16()
    groups = channel_groups(model)
    widths = group_widths(model)
    convs = {g: w for g, w in widths.items() if g.startswith("features")}
    assert len(convs) == 13 and sum(convs.values()) == 4224
    assert {g: w for g, w in widths.items() if g not in convs} == {"classifier.0": 4096, "classifier.3": 4096}
    assert "classifier.6" not in groups                          # the logits: nothing reads them
    assert all(len(g.producers) == 1 and len(g.readers) == 1 for g in groups.values() if not g.refused)
    assert groups["features.0"].readers == ["features.2"]
    last = groups["features.28"]
    assert last.readers == ["classifier.0"] and [m.span for m in last.members if m.role == "in"] == [49]
    assert groups["classifier.0"].readers == ["classifier.3"] and groups["classifier.3"].readers == ["classifier.6"]


def test_the_hidden_units_of_vgg16s_classifier_are_pruned_exactly():
    """The classifier's hidden units are channels like a conv's filters: Linear rows out, the next Linear's columns
    out; checked against the dense network with those units zeroed where the next Linear reads them (hooks
    written here), in eval mode (dropout off)."""
    torch.manual_seed(0)
    model = torchvision.models.vgg16(num_classes=5).eval()
    plan = {"classifier.0": list(range(0, 4096, 3)), "classifier.3": list(range(1, 4096, 5)),
            "features.28": list(range(0, 512, 7))}
    reader = {"classifier.0": "classifier.3", "classifier.3": "classifier.6", "features.28": "classifier.0"}
    x = torch.randn(2, 3, 64, 64)
    want = zeroed_where_read(model, plan, reader, x)
    pruned = prune_filters(copy.deepcopy(model), plan)
    assert pruned.classifier[0].weight.shape == (4096 - len(plan["classifier.0"]), (512 - 74) * 49)
    assert pruned.classifier[3].weight.shape == (4096 - len(plan["classifier.3"]), 4096 - len(plan["classifier.0"]))
    assert pruned.classifier[6].in_features == 4096 - len(plan["classifier.3"])
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), want, atol=1e-5, rtol=1e-4)


def test_empty_plan_entries_are_noops():
    model = chain()
    before, _ = snapshot(model)
    prune_filters(model, {"0": [], "4": []})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------- selection
def test_plan_from_scores_takes_global_lowest_with_floor():
    scores = {"a": torch.tensor([0.1, 0.9, 0.2]), "b": torch.tensor([0.05, 0.01]), "c": torch.tensor([0.5, 0.3])}
    plan = plan_from_scores(scores, 3)
    # lowest are b1 (0.01), b0 (0.05), a0 (0.1); but b must keep one filter -> a0, a2 instead of b0
    assert plan == {"a": [0, 2], "b": [1], "c": []}
    assert plan_from_scores(scores, fraction=0.0) == {"a": [], "b": [], "c": []}
    assert plan_from_scores(scores, 4, min_keep=1) == {"a": [0, 2], "b": [1], "c": [1]}
    with pytest.raises(ValueError, match="at most 4"):
        plan_from_scores(scores, 5)
    with pytest.raises(ValueError, match="exactly one"):
        plan_from_scores(scores)


def test_plan_from_scores_never_empties_a_layer():
    gen = torch.Generator().manual_seed(0)
    scores = {f"l{i}": torch.rand(n, generator=gen) * (i + 1) for i, n in enumerate([4, 8, 16, 32])}
    for k in range(0, 57):
        plan = plan_from_scores(scores, k, min_keep=1)
        assert sum(map(len, plan.values())) == k
        assert all(len(plan[n]) < len(s) for n, s in scores.items())


# ---------------------------------------------------------------- save / load
def test_save_and_load_pruned_round_trip(tmp_path):
    model = chain()
    pruned = prune_filters(copy.deepcopy(model), random_plan(model, 2))
    path = save_pruned(pruned, tmp_path / "p.pt", meta={"criterion": "taylor", "accuracy": 0.9})
    torch.load(path, weights_only=True)  # plain data only
    fresh = chain()
    restored, meta = load_pruned(path, fresh)
    x = torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(restored(x), pruned(x))
    assert meta == {"criterion": "taylor", "accuracy": 0.9}
    assert group_widths(fresh) == group_widths(model)  # template untouched


def test_load_pruned_rejects_other_architectures(tmp_path):
    path = save_pruned(prune_filters(chain(), {"0": [0]}), tmp_path / "p.pt")
    with pytest.raises(ValueError, match="does not match FunctionalNet"):
        load_pruned(path, FunctionalNet())
    with pytest.raises(FileNotFoundError, match="save_pruned"):
        load_pruned(tmp_path / "missing.pt", chain())
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not written by save_pruned"):
        load_pruned(tmp_path / "other.pt", chain())


# ---------------------------------------------------------------- Torch-Pruning agrees
@pytest.mark.slow
def test_same_outputs_as_torch_pruning_on_vgg16():
    tp = pytest.importorskip("torch_pruning")
    torch.manual_seed(0)
    model = torchvision.models.vgg16(num_classes=2).eval()
    plan = random_plan(model, 7, max_fraction=0.5)
    ours = prune_filters(copy.deepcopy(model), plan)
    theirs = copy.deepcopy(model)
    example = torch.randn(1, 3, 64, 64)
    graph = tp.DependencyGraph().build_dependency(theirs, example_inputs=example)
    modules = dict(theirs.named_modules())
    for name, idxs in plan.items():
        if idxs:
            pruner = tp.prune_linear_out_channels if isinstance(modules[name], nn.Linear) else tp.prune_conv_out_channels
            graph.get_pruning_group(modules[name], pruner, idxs=idxs).prune()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-4)
    assert group_widths(ours) == group_widths(theirs)


def test_plan_from_scores_in_blocks_keeps_widths_multiple():
    gen = torch.Generator().manual_seed(1)
    scores = {f"l{i}": torch.rand(n, generator=gen) for i, n in enumerate([30, 64, 16])}
    for k in (0, 8, 40, 70):
        plan = plan_from_scores(scores, k, multiple_of=8)
        kept = {n: len(s) - len(plan[n]) for n, s in scores.items()}
        # every layer that loses filters ends at a multiple of 8 (at least 8); untouched layers keep their width
        assert all((v % 8 == 0 and v >= 8) if plan[n] else v == len(scores[n]) for n, v in kept.items()), kept
        assert k - 8 < sum(map(len, plan.values())) <= k
        for n, idx in plan.items():  # each layer loses its lowest-scored filters
            if idx:
                assert scores[n][idx].max() <= scores[n][[j for j in range(len(scores[n])) if j not in idx]].min()
    # multiple_of=1 is the filter-by-filter selection: the 20 globally lowest scores (no layer comes near its floor)
    lowest = sorted((float(s[i]), n, i) for n, s in scores.items() for i in range(len(s)))[:20]
    assert plan_from_scores(scores, 20, multiple_of=1) == {n: sorted(i for _, m, i in lowest if m == n) for n in scores}


def test_surgery_keeps_no_reference_to_the_model():
    """A pruned model is freed as soon as the user drops it (no cycle through fx's tracer)."""
    import gc
    import weakref

    gc.disable()
    try:
        model = chain()
        ref = weakref.ref(model)
        prune_filters(model, {"0": [1]})
        channel_groups(model)
        del model
        assert ref() is None
    finally:
        gc.enable()


# ---------------------------------------------------------------- property: exact or refused, model unchanged
import torch.nn.utils.prune  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

WRAPPERS = ("none", "sequential", "dataparallel", "weight_norm", "legacy_weight_norm", "spectral_norm",
            "prune_mask", "tensor_hook", "channels_last")


def wrapped(kind):
    """The test chain, optionally wrapped or with one layer reparametrised (the same fresh model each call)."""
    torch.manual_seed(0)
    model = chain()
    if kind == "sequential":
        return nn.Sequential(model)
    if kind == "dataparallel":
        return nn.DataParallel(model)
    if kind == "weight_norm":
        torch.nn.utils.parametrizations.weight_norm(model[4])
    elif kind == "legacy_weight_norm":
        with pytest.warns(FutureWarning):
            torch.nn.utils.weight_norm(model[0])
    elif kind == "spectral_norm":
        torch.nn.utils.parametrizations.spectral_norm(model[4])
    elif kind == "prune_mask":
        torch.nn.utils.prune.random_unstructured(model[8], "weight", 0.3)
    elif kind == "tensor_hook":
        model[0].weight.register_hook(lambda g: g)
    elif kind == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    return model


INDEX = st.one_of(st.integers(-2, 13), st.booleans(), st.floats(0, 5), st.integers(0, 5).map(np.int64))
BAD_PLANS = st.dictionaries(st.sampled_from(["0", "1", "4", "8", "12", "0.0", "0.4", "nope", "module.0"]),
                            st.one_of(st.lists(INDEX, max_size=13), st.integers(0, 3), st.text(max_size=2)), max_size=3)
GOOD_PLANS = st.fixed_dictionaries({}, optional={"0": st.lists(st.integers(0, 7), unique=True, max_size=7),
                                                 "4": st.lists(st.integers(0, 11), unique=True, max_size=11),
                                                 "8": st.lists(st.integers(0, 5), unique=True, max_size=5)})
PLANS = st.one_of(BAD_PLANS, GOOD_PLANS)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=PLANS, kind=st.sampled_from(WRAPPERS))
def test_any_plan_on_any_wrapper_is_exact_or_refused_leaving_the_model_unchanged(plan, kind):
    model, before = wrapped(kind), wrapped(kind)     # two identical models (legacy weight_norm cannot be deep-copied)
    params = [id(p) for p in model.parameters()]
    x = torch.randn(2, 3, 16, 16)
    try:
        prune_filters(model, plan)
    except (KeyError, ValueError, TypeError, NotImplementedError):
        assert [id(p) for p in model.parameters()] == params, "a refused plan must not replace parameters"
        for (k, a), (_, b) in zip(model.state_dict().items(), before.state_dict().items()):
            assert torch.equal(a, b), k
        return
    clean = {name: sorted(int(i) for i in idx) for name, idx in plan.items()}
    ref = masked_reference(before, {n: i for n, i in clean.items() if i}, inplace=True)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), atol=1e-5, rtol=1e-4)
    if kind == "channels_last" and clean.get("4"):
        assert model[4].weight.is_contiguous(memory_format=torch.channels_last)
