"""How to add up the Taylor criterion over a channel group: three aggregations against the group oracle.

    python benchmarks/group_taylor_aggregations.py [--steps 300] [--seeds 0 1 2]

A ResNet-18 (torchvision, 1-channel stem, 10 classes; 7x7 maps in layer1, 1x1 in layer4) is trained briefly on the embedded Fashion-MNIST
(8,800 images, 28x28), then every prunable group's channels are scored three ways, each the mean over
examples of a per-example |.|, and compared with `rank.oracle.oracle` (the loss change when
the channel is zeroed wherever it is read) by Spearman ρ, within each group and over all groups
(L2-normalised per group):

- ``readers`` (the library's): |Σ_readers Σ_m ∂C/∂r·r|, each reader's own part of the gradient;
- ``per_reader``: Σ_readers |Σ_m ∂C/∂r·r| (|.| per reader before summing);
- ``producers``: Σ_producers |Σ_m ∂C/∂o·o| at each producer's BatchNorm output o (what a per-layer
  criterion summed over the group's layers gives; the residual map is counted at every producer).

Writes ``build/group_taylor_aggregations.json`` and prints a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader

from pruning_lib.course.paths import REPO_ROOT
from pruning_lib.rank.criteria import normalize_per_layer
from pruning_lib.data.fashion import fashion_mnist
from pruning_lib.rank.criteria import rank_filters
from pruning_lib.rank.oracle import oracle
from pruning_lib.graph.groups import channel_groups
from pruning_lib.measure import machine_info
from pruning_lib.rank.oracle import spearman


def small_resnet18() -> nn.Module:
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)     # 1-channel 28x28: layer1 at 7x7
    return model


def channels(r: torch.Tensor, offset: int, size: int, span: int) -> torch.Tensor:
    """A reader's input as (N, size, positions) for a group's channels (a Linear: column blocks of `span`)."""
    if r.dim() == 2:
        r = r.reshape(r.shape[0], -1, span)
    return r[:, offset:offset + size].reshape(r.shape[0], size, -1)


def alternatives(model: nn.Module, batches) -> dict[str, dict[str, torch.Tensor]]:
    """Per-reader and per-producer sums, written here with their own hooks."""
    groups = channel_groups(model)
    readers = {m.module for g in groups.values() if not g.refused for m in g.members if m.role == "in"}
    modules = dict(model.named_modules())
    order = list(modules)
    bn_of = {p: next(n for n in order[order.index(p) + 1:] if isinstance(modules[n], nn.BatchNorm2d))
             for g in groups.values() if not g.refused for p in g.producers}
    seen: dict[str, torch.Tensor] = {}

    def keep_input(name):
        def hook(module, args):
            seen[name] = args[0].view_as(args[0])
            return (seen[name],)
        return hook

    def keep_output(name):
        def hook(module, args, out):
            seen[name] = out
        return hook

    hooks = [modules[r].register_forward_pre_hook(keep_input(r)) for r in readers]
    hooks += [modules[bn].register_forward_hook(keep_output("out:" + p)) for p, bn in bn_of.items()]
    sums = {k: {g.name: torch.zeros(g.size, dtype=torch.float64) for g in groups.values() if not g.refused}
            for k in ("per_reader", "producers")}
    n = 0
    for x, y in batches:
        seen.clear()
        out = model(x.detach().requires_grad_(True))
        names = list(seen)
        grads = dict(zip(names, torch.autograd.grad(F.cross_entropy(out, y), [seen[k] for k in names], allow_unused=True)))
        seen = {k: v.detach() for k, v in seen.items()}
        for g in groups.values():
            if g.refused:
                continue
            per_reader = sum(((channels(grads[m.module], m.offset, g.size, m.span) * channels(seen[m.module], m.offset, g.size, m.span))
                              .sum(2).abs()) for m in g.members if m.role == "in")
            sums["per_reader"][g.name] += per_reader.double().sum(0)
            sums["producers"][g.name] += sum((grads["out:" + p] * seen["out:" + p]).sum((2, 3)).abs() for p in g.producers).double().sum(0)
        n += len(y)
    for h in hooks:
        h.remove()
    return {k: {g: (v / n).float() for g, v in d.items()} for k, d in sums.items()}


def run(seed: int, steps: int) -> dict:
    torch.manual_seed(seed)
    train = fashion_mnist("train")
    test = fashion_mnist("test")
    model = small_resnet18()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = DataLoader(train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(seed))
    step = 0
    while step < steps:
        for x, y in loader:
            F.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
            step += 1
            if step >= steps:
                break
    model.eval()
    rank_data = list(DataLoader(torch.utils.data.Subset(train, range(512)), batch_size=64))
    oracle_data = list(DataLoader(torch.utils.data.Subset(test, range(256)), batch_size=128))
    with torch.no_grad():
        accuracy = sum(int((model(x).argmax(1) == y).sum()) for x, y in oracle_data) / 256
    scores = {"readers": rank_filters(model, rank_data, "taylor", normalize=None), **alternatives(model, rank_data)}
    measured = oracle(model, oracle_data, progress=True)
    names = list(measured)
    result = {"seed": seed, "steps": steps, "accuracy": accuracy}
    for k, s in scores.items():
        norm, onorm = normalize_per_layer(s), normalize_per_layer(measured)
        result[k] = {"rho_all": spearman(torch.cat([norm[g] for g in names]), torch.cat([onorm[g] for g in names])),
                     "rho_within_median": statistics.median(spearman(s[g], measured[g]) for g in names if len(measured[g]) > 2)}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    rows = [run(s, args.steps) for s in args.seeds]
    print("| aggregation | " + " | ".join(f"seed {r['seed']} (acc {100 * r['accuracy']:.0f}%): ρ all / median within" for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for k in ("readers", "per_reader", "producers"):
        print(f"| `{k}` | " + " | ".join(f"{r[k]['rho_all']:+.2f} / {r[k]['rho_within_median']:+.2f}" for r in rows) + " |")
    out = REPO_ROOT / "build" / "group_taylor_aggregations.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": machine_info(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
