"""Asking for a speedup on networks the library was not tuned for (issue 32's targets).

torchvision's ResNet-18 at 112x112 asked for ``speedup=2`` and MobileNetV2 at 112x112 asked for 1.5: random
weights (latency does not depend on their values), random images, no fine-tuning.  Prune–Train–Repeat plans every
cut with the latency model (`cost.budgets`: blocks timed alone on this machine, deploy form, batch 8, one
thread; each candidate timed end to end before the cut), and the loop's judge times the network after every cut.
Then, independently of the loop:

- an **independent timer**: `measure.measure_latency` (``torch.utils.benchmark``, another harness than the loop's)
  times the dense and the pruned network, interleaved, five times each, and reports the median speedup;
- **exactness**: with no fine-tuning every kept filter is a row of the dense network's weights, so the channels the
  loop removed are found by matching rows, and the pruned network's output is compared with the dense network's
  where exactly those channels are zeroed wherever they are read (hooks on the readers' inputs);
- **table cost**: the run starts from an empty entry cache (``PRUNING_CACHE_DIR`` in a new folder); the entries
  it measured and the seconds that took are reported; with ``--again`` the same run is repeated on the filled
  cache, to show what a second run reads back.

Targets: ResNet-18 1.9-2.4x by the independent timer within 10 minutes including every table, its entries measured
within 60 s cold; MobileNetV2 1.4-1.8x.  Usage::

    python benchmarks/latency_target.py [--net resnet18] [--target 2.0] [--size 112] [--batch 8] [--again]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch
import torchvision

from pruning_lib import measure
from pruning_lib.graph.groups import channel_groups, group_widths
from pruning_lib.recover.iterative import PruningSchedule, prune_train_repeat


def removed_channels(dense: torch.nn.Module, pruned: torch.nn.Module) -> dict[str, list[int]]:
    """Each group's channels that are gone.  With no fine-tuning every kernel of the pruned producer is a kernel of
    the dense one (random values: each is unique), so its output row is found by looking the kernel up."""
    modules, kept = dict(dense.named_modules()), dict(pruned.named_modules())
    out = {}
    for g in channel_groups(dense).values():
        if g.refused:
            continue
        weight = modules[g.name].weight.detach()
        where = {weight[o, i].numpy().tobytes(): o for o in range(weight.shape[0]) for i in range(weight.shape[1])}
        keep = [where[row[0].numpy().tobytes()] for row in kept[g.name].weight.detach()]
        out[g.name] = sorted(set(range(g.size)) - set(keep))
    return out


def masked_output(dense: torch.nn.Module, removed: dict[str, list[int]], x: torch.Tensor) -> torch.Tensor:
    groups, modules = channel_groups(dense), dict(dense.named_modules())
    hooks = []
    for name, idx in removed.items():
        for m in groups[name].members:
            if m.role == "in" and idx:
                columns = [(m.offset + k) * m.span + s for k in idx for s in range(m.span)]

                def zero(module, args, columns=columns):
                    r = args[0].clone()
                    r[:, columns] = 0
                    return (r,)
                hooks.append(modules[m.module].register_forward_pre_hook(zero))
    try:
        with torch.no_grad():
            return dense.eval()(x)
    finally:
        for h in hooks:
            h.remove()


def run(net: str, target: float, size: int, batch: int, share: float, step: int) -> dict:
    torch.manual_seed(0)
    build = {"resnet18": torchvision.models.resnet18, "mobilenet_v2": torchvision.models.mobilenet_v2}[net]
    dense = build(num_classes=10).eval()
    data = [(torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))) for _ in range(2)]
    schedule = PruningSchedule(criterion="taylor", target_speedup=target, fraction_per_iteration=share,
                               finetune_steps=0, rank_batches=1, latency_batch=batch, latency_step=step)
    start = time.perf_counter()
    pruned, history = prune_train_repeat(dense, data, data[:1], schedule, input_shape=(3, size, size), progress=True)
    seconds = time.perf_counter() - start
    shape = (batch, 3, size, size)
    dense_ms, pruned_ms = [], []
    for _ in range(5):                                   # interleaved: dense, pruned, dense, pruned, ...
        dense_ms.append(measure.measure_latency(dense, shape, form="deploy", num_threads=1)["median_ms"])
        pruned_ms.append(measure.measure_latency(pruned, shape, form="deploy", num_threads=1)["median_ms"])
    x = torch.randn(4, 3, size, size)
    with torch.no_grad():
        difference = float((pruned.eval()(x) - masked_output(dense, removed_channels(dense, pruned), x)).abs().max())
    budgets = history.attrs.get("budgets", {})
    return {"machine": measure.machine_info(), "net": net, "target": target, "size": size, "batch": batch,
            "share": share, "step": step, "iterations": len(history) - 1, "loop_seconds": round(seconds, 1),
            "loop_speedup": float(history["speedup"].iloc[-1]), "loop_speedup_low": float(history["speedup_low"].iloc[-1]),
            "independent_speedup": statistics.median(dense_ms) / statistics.median(pruned_ms),
            "dense_ms": statistics.median(dense_ms), "pruned_ms": statistics.median(pruned_ms),
            "flops_ratio": float(history["gflops"].iloc[0] / history["gflops"].iloc[-1]),
            "params_ratio": float(history["params"].iloc[0] / history["params"].iloc[-1]),
            "speedups": [round(float(v), 3) for v in history["speedup"]],
            "entries_measured": budgets.get("entries_measured"), "entry_seconds": budgets.get("entry_seconds"),
            "cuts": budgets.get("log"), "widths": group_widths(pruned), "max_abs_difference_vs_masked": difference}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", default="resnet18", choices=["resnet18", "mobilenet_v2"])
    parser.add_argument("--target", type=float, default=None, help="default: 2 for ResNet-18, 1.5 for MobileNetV2")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--share", type=float, default=0.25, help="fraction_per_iteration")
    parser.add_argument("--step", type=int, default=16, help="latency_step: widths in multiples of this")
    parser.add_argument("--again", action="store_true", help="run a second time on the filled entry cache")
    args = parser.parse_args(argv)
    target = args.target or {"resnet18": 2.0, "mobilenet_v2": 1.5}[args.net]
    torch.set_num_threads(1)
    measure.keep_freed_memory()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["PRUNING_CACHE_DIR"] = cache            # cold: every entry measured by this run
        results = [run(args.net, target, args.size, args.batch, args.share, args.step)]
        if args.again:
            results.append(run(args.net, target, args.size, args.batch, args.share, args.step))
    print(json.dumps(results if args.again else results[0], indent=1))


if __name__ == "__main__":
    main()
