"""Benchmark: which Prune–Train–Repeat schedule notebook 05 uses for the small ResNet, and why.

    python benchmarks/resnet_schedules.py [--seed 0] [--jobs 2] [--out build/resnet_schedules.json]

For each schedule below (the same for Taylor and random), from the quick profile's fine-tuned small ResNet
(`experiment.load_baseline` with ``model=small_resnet``; made first if missing): Prune–Train–Repeat to 60% or 80%
of the group channels removed, the first network with at least 2.5x fewer FLOPs (`arms.FirstWithin`, as in the
notebook) fine-tuned to its plateau, its test accuracy, and then, with nothing else running, its speedup
against the dense ResNet (deploy form, batch 64, one thread) over its FLOPs ratio.  Training runs `--jobs` at a
time (one torch thread each: the accuracies do not depend on it); the timing runs alone afterwards.  Prints the
machine and a table (the README's), writes JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
from pathlib import Path

import pandas as pd
import torch

from pruning_lib import measure
from pruning_lib.recover import iterative
from pruning_lib.course import arms, experiment
from pruning_lib.course.profiles import get_profile
from pruning_lib.recover.evaluation import correct
from pruning_lib.surgery import with_widths

#: name -> schedule changes (on top of the quick profile's), as in the README's table.
SCHEDULES = {
    "notebook 03's (a fifth per cut, λ = 0.1, blocks of 8)": {},
    "a fifth per cut, λ = 0": {"flops_lambda": 0.0},
    "a tenth per cut, λ = 0.1": {"fraction_per_iteration": 0.1, "target_fraction": 0.6},
    "a tenth per cut, λ = 0": {"fraction_per_iteration": 0.1, "flops_lambda": 0.0, "target_fraction": 0.6},
    "a fifth per cut, λ = 0, blocks of 16": {"flops_lambda": 0.0, "multiple_of": 16},
    "a tenth per cut, λ = 0, blocks of 16 (notebook 05's)": {"fraction_per_iteration": 0.1, "flops_lambda": 0.0,
                                                             "multiple_of": 16, "target_fraction": 0.6},
}
MIN_FLOPS_RATIO = 2.5


def run_schedule(args: tuple[str, dict, int]) -> dict:
    """Both criteria under one schedule: the first network within the FLOPs budget, fine-tuned, on the test set."""
    name, changes, seed = args
    P = get_profile("quick", f"model=small_resnet,seed={seed}")
    torch.set_num_threads(1)
    baseline = experiment.load_baseline(P, progress=False)
    loaders = experiment.target_loaders(P)
    val, test = list(loaders["val"]), list(loaders["test"])
    gflops, params = measure.count_flops(baseline, (1, *P.input_shape)) / 1e9, measure.count_parameters(baseline)
    out = {"schedule": name, "changes": changes, "dense_accuracy": float(correct(baseline, test).mean()), "models": {}}
    for criterion in ("taylor", "random"):
        keep = arms.FirstWithin(gflops, params, min_flops_ratio=MIN_FLOPS_RATIO, min_params_ratio=1.0)
        final, history = iterative.prune_train_repeat(baseline, loaders["train"], val,
                                                      experiment.schedule(criterion, P, **changes),
                                                      input_shape=P.input_shape, callbacks=[keep], progress=False)
        model = keep.model or final
        experiment.final_fine_tune(model, P, teacher=baseline)
        out["models"][criterion] = {
            "reached_budget": keep.model is not None, "accuracy": float(correct(model.eval(), test).mean()),
            "flops_ratio": gflops / (measure.count_flops(model, (1, *P.input_shape)) / 1e9),
            "widths": {k: int(v) for k, v in iterative.pruning_units(model)[0](model).items()},
            "state": {k: v.clone() for k, v in model.state_dict().items()}}
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("build/resnet_schedules.json"))
    args = parser.parse_args(argv)
    print("machine:", json.dumps(measure.machine_info()))
    P = get_profile("quick", f"model=small_resnet,seed={args.seed}")
    experiment.load_baseline(P, progress=False)                # made once, before the workers share it
    jobs = [(name, changes, args.seed) for name, changes in SCHEDULES.items()]
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        results = pool.map(run_schedule, jobs)

    torch.set_num_threads(1)                                    # the timing: alone, one thread
    measure.keep_freed_memory()
    dense = experiment.load_baseline(P, progress=False)
    for r in results:
        nets = {"dense": dense}
        for criterion, m in r["models"].items():
            model = with_widths(experiment.architecture(P), m["widths"])
            model.load_state_dict(m.pop("state"))
            nets[criterion] = model.eval()
        table = measure.side_by_side(nets, P.input_shape, [P.benchmark_batch], forms=("deploy",), num_threads=1,
                                     min_run_time=0.3, rounds=3).set_index("model")
        for criterion in r["models"]:
            r["models"][criterion]["speedup"] = float(table.loc[criterion, "speedup"])
            r["models"][criterion]["speedup_per_flops"] = float(table.loc[criterion, "speedup_per_flops"])

    rows = [{"schedule": r["schedule"],
             **{f"{c} FLOPs ratio": m["flops_ratio"] for c, m in r["models"].items()},
             **{f"{c} accuracy %": 100 * m["accuracy"] for c, m in r["models"].items()},
             "taylor points lost": 100 * (r["dense_accuracy"] - r["models"]["taylor"]["accuracy"]),
             "random reached 2.5x": r["models"]["random"]["reached_budget"],
             "taylor speedup / FLOPs": r["models"]["taylor"]["speedup_per_flops"]} for r in results]
    print(f"\nseed {args.seed}, dense test accuracy {100 * results[0]['dense_accuracy']:.2f}%; "
          "the first network with >= 2.5x fewer FLOPs, after its final fine-tune; speed: deploy, batch 64, 1 thread")
    print(pd.DataFrame(rows).round(2).to_string(index=False))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": measure.machine_info(), "seed": args.seed, "results": results},
                                   indent=1, default=str) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return results


if __name__ == "__main__":
    main()
