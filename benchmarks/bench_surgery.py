"""Benchmark: surgery time on VGG16, and the cost of Taylor ranking.

    python benchmarks/bench_surgery.py [--filters 512] [--repeats 5] [--out build/bench_surgery.json]

1. Removing the same random filters from torchvision VGG16 (2-class head):
   pruning_lib.surgery.prune_filters vs Torch-Pruning (dependency graph + prune),
   against the floor: cloning every parameter once.
   Targets: ours <= 0.6x Torch-Pruning, within about 2x of the floor.
2. Taylor ranking (forward + backward to the maps) vs one plain forward + backward
   (loss.backward() into the weights) over the same batches.  Target: <= 1.2x.
3. Channel groups on torchvision ResNet-50: group analysis + surgery removing the same random 10% of
   every group's channels, vs Torch-Pruning (dependency graph + prune) and the floor.
   Targets: <= 0.5x Torch-Pruning, within 2x of the floor.
4. Taylor ranking of ResNet-50's groups (`rank.criteria.rank_filters`, the one engine) vs one plain forward + backward.
   Target: <= 1.2x.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

from pruning_lib.graph.groups import group_widths
from pruning_lib.rank.criteria import rank_filters
from pruning_lib.graph.groups import channel_groups
from pruning_lib.measure import machine_info
from pruning_lib.surgery import prune_filters


def random_plan(model, n_filters: int, seed: int = 0) -> dict[str, list[int]]:
    """`n_filters` distinct filters drawn uniformly from all conv filters (never a whole layer)."""
    widths = group_widths(model)
    owners = [(name, k) for name, n in widths.items() for k in range(n)]
    gen = torch.Generator().manual_seed(seed)
    plan: dict[str, list[int]] = {name: [] for name in widths}
    for j in torch.randperm(len(owners), generator=gen)[:n_filters].tolist():
        plan[owners[j][0]].append(owners[j][1])
    return {n: sorted(v) for n, v in plan.items()}


def timed_interleaved(fns: dict, setup, repeats: int) -> dict[str, list[float]]:
    """Wall-clock seconds of each fn(setup()) (setup not timed), the fns interleaved within each repeat.

    Interleaving spreads the machine's slow moments (here: page faults when ~0.5 GB of fresh
    memory is first touched) evenly over the contenders.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            arg = setup()
            t0 = time.perf_counter()
            fn(arg)
            times[name].append(time.perf_counter() - t0)
            del arg
    return times


def torch_pruning_prune(model, plan, example):
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    modules = dict(model.named_modules())
    for name, idxs in plan.items():
        if idxs:
            graph.get_pruning_group(modules[name], tp.prune_conv_out_channels, idxs=idxs).prune()
    return model


def race(model, plan, repeats: int, **extra) -> dict:
    """Ours vs Torch-Pruning vs the floor on fresh copies of `model`, interleaved; medians, minima and ratios."""
    example = torch.randn(1, 3, 224, 224)
    fns = {"ours_s": lambda m: prune_filters(m, plan),        # for groups: includes tracing them
           "floor_clone_s": lambda m: [p.detach().clone() for p in m.parameters()]}
    try:
        import torch_pruning  # noqa: F401

        fns["torch_pruning_s"] = lambda m: torch_pruning_prune(m, plan, example)
    except ImportError:
        pass
    result = timed_interleaved(fns, lambda: copy.deepcopy(model), repeats)
    summary = {**extra, "repeats": repeats}
    for stat, fn in (("median", statistics.median), ("min", min)):
        value = {k: fn(v) for k, v in result.items()}
        summary.update({f"{stat}_{k}": v for k, v in value.items()})
        summary[f"{stat}_ours_vs_floor"] = value["ours_s"] / value["floor_clone_s"]
        if "torch_pruning_s" in value:
            summary[f"{stat}_ours_vs_torch_pruning"] = value["ours_s"] / value["torch_pruning_s"]
    return summary


def bench_surgery(n_filters: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = torchvision.models.vgg16(num_classes=2).eval()
    return race(model, random_plan(model, n_filters), repeats, filters_removed=n_filters)


def bench_groups(repeats: int, fraction: float = 0.1) -> dict:
    """ResNet-50: the same random `fraction` of every prunable group's channels, named by the group's first conv."""
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    gen = torch.Generator().manual_seed(0)
    plan = {g.name: sorted(torch.randperm(g.size, generator=gen)[: int(fraction * g.size)].tolist())
            for g in channel_groups(model).values() if not g.refused}
    return race(model, plan, repeats, network="resnet50", channels_removed=sum(map(len, plan.values())))


def bench_taylor(batches: int, batch_size: int, size: int, repeats: int, arch: str = "vgg16") -> dict:
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=2).eval()
    rank = rank_filters
    data = [(torch.randn(batch_size, 3, size, size), torch.randint(0, 2, (batch_size,))) for _ in range(batches)]

    def plain(m):
        for x, y in data:
            F.cross_entropy(m(x), y).backward()
        m.zero_grad(set_to_none=True)

    plain(model)  # warm-up
    rank(model, data[:1], "taylor")
    t = timed_interleaved({"plain": plain, "taylor": lambda m: rank(m, data, "taylor")}, lambda: model, repeats)
    plain_s, taylor_s = t["plain"], t["taylor"]
    return {"model": arch, "batches": batches, "batch_size": batch_size, "image_size": size,
            "median_forward_backward_s": statistics.median(plain_s), "median_taylor_s": statistics.median(taylor_s),
            "taylor_vs_forward_backward": statistics.median(taylor_s) / statistics.median(plain_s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--filters", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--taylor-batches", type=int, default=4)
    parser.add_argument("--taylor-batch-size", type=int, default=8)
    parser.add_argument("--taylor-image-size", type=int, default=112)
    parser.add_argument("--out", type=Path, default=Path("build/bench_surgery.json"))
    args = parser.parse_args()
    report = {"machine": machine_info(),
              "surgery": bench_surgery(args.filters, args.repeats),
              "taylor": bench_taylor(args.taylor_batches, args.taylor_batch_size, args.taylor_image_size,
                                     max(3, args.repeats // 2)),
              "groups": bench_groups(args.repeats),
              "taylor_groups": bench_taylor(args.taylor_batches, args.taylor_batch_size, args.taylor_image_size,
                                            max(3, args.repeats // 2), arch="resnet50")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
