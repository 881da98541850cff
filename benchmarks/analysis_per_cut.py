"""One analysis per cut: how often one Prune–Train–Repeat iteration traces the network, and what that costs.

torchvision's ResNet-50 (random weights) at 96x96, one ranking batch of 4, no fine-tuning, one iteration removing
64 channels with Taylor.  Every call of the library's tracer (``graph.groups.trace``, torch.fx), of its channel
analysis (the groups' walk over the graph) and of the FLOPs counter (``measure.counting``, a forward pass under
``FlopCounterMode``) is counted and timed.  Run it on two versions of the library to compare them: it only wraps
names both versions have.

Usage: ``python benchmarks/analysis_per_cut.py [--iterations 2]`` (prints JSON: per iteration, traces, analysis
seconds, FLOP-counting passes and seconds, the iteration's seconds).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torchvision

import pruning_lib.graph.groups as groups_module
import pruning_lib.measure.counting as counting
from pruning_lib import measure
from pruning_lib.graph.groups import group_widths
from pruning_lib.recover.iterative import PruningSchedule, prune_train_repeat

COUNTS = {"traces": 0, "trace_s": 0.0, "walks": 0, "walk_s": 0.0, "flop_passes": 0, "flop_s": 0.0}


def counted(function, calls: str, seconds: str):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            COUNTS[calls] += 1
            COUNTS[seconds] += time.perf_counter() - start
    return wrapper


class PerIteration:
    """Reads the counters at every iteration's end (and at the start)."""

    def __init__(self):
        self.rows, self.last = [], None

    def snapshot(self):
        now = dict(COUNTS, clock=time.perf_counter())
        if self.last is not None:
            self.rows.append({k: round(now[k] - self.last[k], 3) for k in now})
        self.last = now

    def on_start(self, history, model):
        self.snapshot()

    def on_iteration(self, row, model):
        self.snapshot()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    groups_module.trace = counted(groups_module.trace, "traces", "trace_s")
    groups_module._Tracer.run = counted(groups_module._Tracer.run, "walks", "walk_s")
    counting._run_flop_counter = counted(counting._run_flop_counter, "flop_passes", "flop_s")
    model = torchvision.models.resnet50(num_classes=10).eval()
    data = [(torch.randn(4, 3, args.size, args.size), torch.randint(0, 10, (4,)))]
    total = sum(group_widths(model).values())
    schedule = PruningSchedule(criterion="taylor", filters_per_iteration=64, finetune_steps=0, rank_batches=1,
                               target_fraction=64 * args.iterations / total + 1e-6)
    spy = PerIteration()
    start = time.perf_counter()
    _, history = prune_train_repeat(model, data, data, schedule, input_shape=(3, args.size, args.size),
                                    callbacks=[spy], progress=False)
    rows = [{**r, "iteration_s": r.pop("clock")} for r in spy.rows]
    print(json.dumps({"machine": measure.machine_info(), "iterations": rows, "total_s": time.perf_counter() - start,
                      "removed": int(history["filters_removed"].iloc[-1])}, indent=1))


if __name__ == "__main__":
    main()
