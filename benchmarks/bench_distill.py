"""Benchmark: what fine-tuning with the dense network as teacher buys (knowledge distillation).

    python benchmarks/bench_distill.py [--profile quick] [--criteria taylor random] [--seeds 0 1 2]
                                       [--distill 0 0.7] [--threads 1] [--out-dir build]

For each criterion, seed and distillation weight it runs notebook 03's recipe: Prune–Train–Repeat from
the fine-tuned baseline (the profile's schedule, only ``seed`` and ``distill`` changed), then the final
fine-tune to the validation plateau (with the dense teacher when ``distill > 0``), then one test
evaluation.  Prints the machine and a table; writes ``build/bench_distill.csv`` and ``.json``.
Each run takes 1-2 minutes on 2 CPU cores (quick profile).

Why: with distill = 0 the Taylor-pruned network lost about a point of test accuracy against the dense
one (3,200 training images; the baseline's training loss reaches ~0.01), more than the issue's
1.0-point target; this script is the measurement behind the profile's ``distill``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from pruning_lib import measure
from pruning_lib.recover import iterative
from pruning_lib.course import experiment
from pruning_lib.course.profiles import get_profile
from pruning_lib.recover.evaluation import evaluate


def one_run(P, baseline, loaders, criterion: str, seed: int, distill: float) -> dict:
    """Prune–Train–Repeat + final fine-tune for one setting; test accuracies and sizes."""
    start = time.perf_counter()
    schedule = experiment.schedule(criterion, P, seed=seed, distill=distill)
    model, history = iterative.prune_train_repeat(baseline, loaders["train"], loaders["val"], schedule,
                                                  input_shape=P.input_shape, progress=False)
    final = experiment.final_fine_tune(model, P, teacher=baseline if distill else None)
    shape = (1, *P.input_shape)
    dense_test = evaluate(baseline, loaders["test"])["accuracy"]
    test = evaluate(model, loaders["test"])["accuracy"]
    return {"criterion": criterion, "seed": seed, "distill": distill,
            "val_accuracy": evaluate(model, loaders["val"])["accuracy"], "test_accuracy": test,
            "dense_test_accuracy": dense_test, "points_lost": 100 * (dense_test - test),
            "flops_ratio": measure.count_flops(baseline, shape) / measure.count_flops(model, shape),
            "params_ratio": measure.count_parameters(baseline) / measure.count_parameters(model),
            "final_fine_tune_steps": int(final["step"].max()), "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--criteria", nargs="+", default=["taylor", "random"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--distill", type=float, nargs="+", default=None, help="default: 0 and the profile's")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (results vary slightly with it)")
    parser.add_argument("--out-dir", type=Path, default=Path("build"))
    args = parser.parse_args(argv)

    P = get_profile(args.profile)
    torch.set_num_threads(args.threads)
    weights = args.distill or sorted({0.0, P.distill})
    print("machine:", json.dumps(measure.machine_info()))
    print(f"profile={P.name}  criteria={args.criteria}  seeds={args.seeds}  distill={weights}  threads={args.threads}")
    baseline, loaders = experiment.load_baseline(P), experiment.target_loaders(P)
    rows = []
    for criterion in args.criteria:
        for seed in args.seeds:
            for distill in weights:
                rows.append(one_run(P, baseline, loaders, criterion, seed, distill))
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}),
                      flush=True)
    table = pd.DataFrame(rows)
    summary = table.groupby(["criterion", "distill"])[["test_accuracy", "points_lost", "flops_ratio"]].agg(
        ["mean", "min", "max"])
    print(summary.round(3).to_string())
    args.out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out_dir / "bench_distill.csv", index=False)
    (args.out_dir / "bench_distill.json").write_text(json.dumps(
        {"machine": measure.machine_info(), "profile": P.name, "threads": args.threads, "runs": rows}, indent=1))
    print(f"wrote {args.out_dir / 'bench_distill.csv'} and .json")
    return table


if __name__ == "__main__":
    main()
