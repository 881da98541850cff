"""The cost package: shapes, parameters and FLOPs under any widths, blocks that add up to the network, and the
latency model's bookkeeping (entries measured once, read back, looked up per block).

References are independent of what is tested: a network built with those widths (surgery, proven exact in
test_surgery.py) and counted or run by torch itself; blocks are run one after another by an interpreter written
here and compared with the whole network's output.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from pruning_lib.cost.blocks import blocks_of, build, signature
from pruning_lib.cost.entries import Entry, EntryStore
from pruning_lib.cost.latency import LatencyModel
from pruning_lib.cost.network import Network
from pruning_lib.graph.functions import reads_only_shape
from pruning_lib.measure import count_flops, count_parameters
from pruning_lib.models import small_vgg
from pruning_lib.models.resnets import small_resnet
from pruning_lib.surgery import with_widths


class Concat(nn.Module):
    """Two branches concatenated, then a depthwise conv and a Linear after flattening with x.view(x.size(0), -1)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 6, 1)
        self.bn = nn.BatchNorm2d(14)
        self.dw = nn.Conv2d(14, 14, 3, padding=1, groups=14)
        self.c = nn.Conv2d(14, 10, 3, stride=2, padding=1)
        self.fc = nn.Linear(10 * 4 * 4, 5)

    def forward(self, x):
        y = torch.cat([F.relu(self.a(x)), self.b(x)], dim=1)
        y = F.relu(self.c(self.dw(self.bn(y))))
        return self.fc(y.view(y.size(0), -1))


def networks():
    torch.manual_seed(0)
    return {
        "small_vgg": (small_vgg((8, "M", 16, 16, "M", 24), in_channels=1, num_classes=3, hidden=12), (1, 16, 16)),
        "small_resnet": (small_resnet((8, 16), (2, 1), in_channels=1, num_classes=3), (1, 16, 16)),
        "concat": (Concat(), (3, 8, 8)),
        "resnet18": (torchvision.models.resnet18(num_classes=4), (3, 32, 32)),
        "mobilenet_v2": (torchvision.models.mobilenet_v2(num_classes=4), (3, 32, 32)),
    }


def random_widths(widths, rng):
    return {g: rng.randint(1, w) for g, w in widths.items()}


@pytest.mark.parametrize("name", list(networks()))
def test_shapes_parameters_and_flops_under_any_widths_are_those_of_the_network_built_with_them(name):
    model, shape = networks()[name]
    net = Network(model.eval(), (2, *shape))
    rng = random.Random(0)
    for _ in range(3):
        widths = random_widths(net.widths, rng)
        built = with_widths(model, widths).eval()
        assert net.params(widths) == count_parameters(built)
        assert net.flops(widths) == pytest.approx(count_flops(built, (1, *shape)), rel=1e-9)
        seen = {}                         # every module's output shapes in the built network, call after call

        def record(name):
            def hook(module, args, out):
                seen.setdefault(name, []).append(tuple(out.shape))
            return hook
        hooks = [m.register_forward_hook(record(n)) for n, m in built.named_modules() if not list(m.children())]
        with torch.no_grad():
            built(torch.randn(2, *shape))
        for h in hooks:
            h.remove()
        calls = {}
        for node in net.nodes:
            if node.op == "call_module" and node.target in seen:
                k = calls[node.target] = calls.get(node.target, -1) + 1
                assert net.shape(node.name, widths) == seen[node.target][k], (node.name, widths)


def run_blocks(net: Network, widths, x):
    """The network computed block by block, each block built alone at `widths` (its weights the first rows and
    columns of the network's), in graph order."""
    values = {}
    placeholder = next(n.name for n in net.trace.graph.nodes if n.op == "placeholder")
    values[placeholder] = x
    for block in blocks_of(net):
        body, _ = build(net, block, widths)
        with torch.no_grad():
            values[block.nodes[-1]] = body(*(values[i] for i in block.inputs))
    output = next(n for n in net.trace.graph.nodes if n.op == "output")
    return values[output.args[0].name]


@pytest.mark.parametrize("name", list(networks()))
def test_the_blocks_cover_every_operation_once_and_run_one_after_another_they_are_the_network(name):
    model, shape = networks()[name]
    model.eval()
    net = Network(model, (2, *shape))
    blocks = blocks_of(net)
    covered = [n for b in blocks for n in b.nodes]
    compute = [n.name for n in net.nodes if net.is_tensor(n.name) and not reads_only_shape(n)]
    assert sorted(covered) == sorted(compute) and len(covered) == len(set(covered))
    x = torch.randn(2, *shape)
    with torch.no_grad():
        want = model(x)
    assert torch.allclose(run_blocks(net, {}, x), want, atol=1e-5)
    widths = random_widths(net.widths, random.Random(1))
    with torch.no_grad():
        want = with_widths(model, widths).eval()(x)
    assert torch.allclose(run_blocks(net, widths, x), want, atol=1e-5), widths


def test_repeated_blocks_share_a_signature_and_a_signature_changes_only_with_its_own_groups():
    model = torchvision.models.resnet18(num_classes=4).eval()
    net = Network(model, (2, 3, 64, 64))
    blocks = {b.name: b for b in blocks_of(net)}
    conv2 = {n: b for n, b in blocks.items() if n.endswith("conv2")}
    one, two = conv2["layer2_0_conv2"], conv2["layer2_1_conv2"]
    assert signature(net, one, {}) == signature(net, two, {})         # same sizes, same input shape
    g1 = next(g for g in one.groups if "layer2.0.conv1" in g)
    assert signature(net, one, {g1: 64}) != signature(net, one, {})
    assert signature(net, two, {g1: 64}) == signature(net, two, {})    # not its group
    assert "Conv2d(64, 128" in signature(net, one, {g1: 64})


class FlopsClock(EntryStore):
    """An entry store whose 'measurement' is 1 ms per MFLOP of the block plus 0.01 ms: known answers for tests."""

    def time_blocks(self, built, *, seed=0, progress=False):
        out = {}
        for s, (body, shapes) in built.items():
            flops = count_flops(body, tuple(torch.randn(shape) for shape in shapes))
            out[s] = Entry(flops / 1e6 + 0.01, 0.0)
        return out


def test_the_latency_model_measures_each_entry_once_and_reads_it_back_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNING_CACHE_DIR", str(tmp_path))
    model, shape = networks()["small_resnet"]
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lm = LatencyModel(model, (4, *shape), store=FlopsClock("deploy", 1))
    total = lm.sum_ms()
    built = [build(lm.network, b, {}) for b in lm.blocks]
    assert total == pytest.approx(sum(count_flops(body, tuple(torch.randn(s) for s in shapes)) / 1e6 + 0.01
                                      for body, shapes in built))
    measured = lm.store.measured
    unique = {lm.signature(b, {}) for b in lm.blocks}
    assert measured == len(unique) < len(lm.blocks)           # the repeated block is measured once
    files = list(tmp_path.glob("latency-entries-*.json"))
    assert len(files) == 1 and len(json.loads(files[0].read_text())["entries"]) == measured
    again = LatencyModel(model, (4, *shape), store=FlopsClock("deploy", 1))
    assert again.sum_ms() == pytest.approx(total) and again.store.measured == 0          # read back
    other = LatencyModel(model, (4, *shape), store=FlopsClock("deploy", 2))              # another bucket
    other.sum_ms()
    assert other.store.measured == measured and len(list(tmp_path.glob("latency-entries-*.json"))) == 2
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())        # the model is untouched


def test_calibration_adds_the_residual_and_savings_are_read_at_the_neighbours_widths(tmp_path, monkeypatch):
    """A conv between groups a and b costs c_in x c_out: halving both saves 75% of it, not the 100% the two
    one-at-a-time savings add up to.  The model's prediction of the pair is the block at both widths."""
    monkeypatch.setenv("PRUNING_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(32, 4, 1)).eval()
    lm = LatencyModel(model, (2, 3, 16, 16), store=FlopsClock("deploy", 1, cache=False))
    assert lm.calibrate(lm.sum_ms() + 1.5) == pytest.approx(1.5)
    assert lm.predict() == pytest.approx(lm.sum_ms() + 1.5)
    a, b = "0", "2"
    savings = lm.savings({a: [16], b: [16]}, lm.widths)
    both = lm.saving_ms({a: 16, b: 16})
    middle = 2 * 2 * 32 * 32 * 9 * 256 / 1e6                          # the conv between them, ms
    assert savings[a][0] + savings[b][0] - both == pytest.approx(middle / 4, rel=1e-6)
    assert lm.predict({a: 16, b: 16}) == pytest.approx(lm.predict() - both)


@pytest.mark.slow
def test_a_real_store_times_blocks_and_their_noise(tmp_path, monkeypatch):
    """The real harness on a tiny network: every entry positive with a noise, the sum calibrated to the network."""
    monkeypatch.setenv("PRUNING_CACHE_DIR", str(tmp_path))
    model, shape = networks()["small_vgg"]
    lm = LatencyModel(model.eval(), (8, *shape))
    times = lm.block_ms()
    assert len(times) == len(lm.blocks) and all(t > 0 for t in times.values())
    assert lm.noise_ms() >= 0 and lm.store.seconds > 0
    assert lm.calibrate(2 * lm.sum_ms()) == pytest.approx(lm.sum_ms())
