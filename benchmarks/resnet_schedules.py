"""Benchmark: which Prune–Train–Repeat schedule notebook 05 uses for the small ResNet, and why.

    python benchmarks/resnet_schedules.py [--seed 0] [--jobs 2] [--out build/resnet_schedules.json]

For each schedule below (the same for Taylor and random), from the quick profile's fine-tuned small ResNet
(`experiment.load_baseline` with ``model=small_resnet``; made first if missing): Prune–Train–Repeat to 60% or 80%
of the group channels removed, the first network with at least 2.5x fewer FLOPs (`arms.FirstWithin`, as in the
notebook) fine-tuned to its plateau, and its **validation** accuracy.  The schedule is chosen on validation only
(Taylor's network within the budget with the highest validation accuracy); the test set is read once, for the
chosen schedule's two networks and the dense one.  Runs `--jobs` at a time (one torch thread each: the accuracies
do not depend on it).  Prints the machine and a table (the README's), writes JSON.
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
from pruning_lib.course import arms, experiment, resnet
from pruning_lib.course.profiles import get_profile
from pruning_lib.recover.evaluation import correct
from pruning_lib.graph.groups import group_widths
from pruning_lib.surgery import with_widths

#: name -> schedule changes (on top of the quick profile's), as in the README's table.
SCHEDULES = {
    "notebook 03's (a fifth per cut, λ = 0.1, blocks of 8)": {},
    "a fifth per cut, λ = 0": {"flops_lambda": 0.0},
    "a tenth per cut, λ = 0.1": {"fraction_per_iteration": 0.1, "target_fraction": 0.6},
    "a tenth per cut, λ = 0 (notebook 05's: resnet.SCHEDULES)": {"fraction_per_iteration": 0.1, "flops_lambda": 0.0,
                                                                 "target_fraction": 0.6},
    "a fifth per cut, λ = 0, blocks of 16": {"flops_lambda": 0.0, "multiple_of": 16},
    "a tenth per cut, λ = 0, blocks of 16": {"fraction_per_iteration": 0.1, "flops_lambda": 0.0, "multiple_of": 16,
                                             "target_fraction": 0.6},
}
assert resnet.SCHEDULES["quick"] in SCHEDULES.values(), "notebook 05's schedule must be one of those compared"
MIN_FLOPS_RATIO = 2.5


def run_schedule(args: tuple[str, dict, int]) -> dict:
    """Both criteria under one schedule: the first network within the FLOPs budget, fine-tuned, on validation."""
    name, changes, seed = args
    P = get_profile("quick", f"model=small_resnet,seed={seed}")
    torch.set_num_threads(1)
    baseline = experiment.load_baseline(P, progress=False)
    loaders = experiment.target_loaders(P)
    val = list(loaders["val"])
    gflops, params = measure.count_flops(baseline, (1, *P.input_shape)) / 1e9, measure.count_parameters(baseline)
    out = {"schedule": name, "changes": changes, "dense_val_accuracy": float(correct(baseline, val).mean()),
           "models": {}}
    for criterion in ("taylor", "random"):
        keep = arms.FirstWithin(gflops, params, min_flops_ratio=MIN_FLOPS_RATIO, min_params_ratio=1.0)
        final, history = iterative.prune_train_repeat(baseline, loaders["train"], val,
                                                      experiment.schedule(criterion, P, **changes),
                                                      input_shape=P.input_shape, callbacks=[keep], progress=False)
        model = keep.model or final
        experiment.final_fine_tune(model, P, teacher=baseline)
        out["models"][criterion] = {
            "reached_budget": keep.model is not None, "val_accuracy": float(correct(model.eval(), val).mean()),
            "flops_ratio": gflops / (measure.count_flops(model, (1, *P.input_shape)) / 1e9),
            "widths": {k: int(v) for k, v in group_widths(model).items()},
            "state": {k: v.clone() for k, v in model.state_dict().items()}}
    return out


def choose_on_validation(results: list[dict]) -> dict:
    """The schedule whose Taylor network reached the FLOPs budget with the highest validation accuracy."""
    within = [r for r in results if r["models"]["taylor"]["reached_budget"]]
    if not within:
        raise RuntimeError(f"no schedule's Taylor run reached {MIN_FLOPS_RATIO}x fewer FLOPs; nothing to choose")
    return max(within, key=lambda r: r["models"]["taylor"]["val_accuracy"])


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

    chosen = choose_on_validation(results)
    dense = experiment.load_baseline(P, progress=False)
    test = list(experiment.target_loaders(P)["test"])            # read once: the chosen schedule and the dense net
    chosen["dense_test_accuracy"] = float(correct(dense, test).mean())
    for m in chosen["models"].values():
        model = with_widths(experiment.architecture(P), m["widths"])
        model.load_state_dict(m["state"])
        m["test_accuracy"] = float(correct(model.eval(), test).mean())
    for r in results:
        for m in r["models"].values():
            m.pop("state")

    rows = [{"schedule": r["schedule"] + (" (chosen)" if r is chosen else ""),
             **{f"{c} FLOPs ratio": m["flops_ratio"] for c, m in r["models"].items()},
             **{f"{c} val %": 100 * m["val_accuracy"] for c, m in r["models"].items()},
             "taylor within 2.5x": r["models"]["taylor"]["reached_budget"],
             "random within 2.5x": r["models"]["random"]["reached_budget"]} for r in results]
    print(f"\nseed {args.seed}, dense validation accuracy {100 * results[0]['dense_val_accuracy']:.2f}% (400 images); "
          "the first network with >= 2.5x fewer FLOPs, after its final fine-tune")
    print(pd.DataFrame(rows).round(2).to_string(index=False))
    print(f"\nchosen on validation: {chosen['schedule']}; test (5,200 images, read once): dense "
          f"{100 * chosen['dense_test_accuracy']:.2f}%, " +
          ", ".join(f"{c} {100 * m['test_accuracy']:.2f}%" for c, m in chosen["models"].items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": measure.machine_info(), "seed": args.seed, "results": results},
                                   indent=1, default=str) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return results


if __name__ == "__main__":
    main()
