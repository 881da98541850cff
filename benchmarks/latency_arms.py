"""Pruning for FLOPs or for measured time, side by side (issue 25's benchmark: ``make bench-latency``).

For each network of the quick profile (the small VGG, the small ResNet) and each seed, the profile's fine-tuned
baseline (notebook 01's, made again for that seed) is pruned by Prune–Train–Repeat in three arms that change one
thing, the cost of a filter:

- **(a) flops**: the course's loop as notebook 03 runs it: Taylor scores regularised by FLOPs, widths in blocks
  of the profile's ``multiple_of`` (8);
- **(b) flops, step**: the same with widths rounded to the measured step (``--step``, 16: the sixteen float32
  lanes of an AVX-512 register, where notebook 04's staircase steps on this machine);
- **(c) latency**: the same Taylor scores, unregularised, each cut planned by the latency model measured here
  (`cost.budgets`: blocks timed alone, deploy form, the profile's benchmark batch, one thread, widths in blocks of
  ``--table-step``; each candidate timed end to end before the cut) at the least importance;
- and, beside the three, **asked 3x and 4x**: notebook 04's loop (`course.arms.asked_for_the_claim`), asked for
  the post's claim itself (``--ask`` times faster and 4x fewer parameters), then judged on it (at least 3x faster
  measured here, 4x fewer parameters, at most 1 point of test accuracy lost, each with its noise).

**At equal accuracy, faster?**  Arms (a) and (b) remove the profile's ``target_fraction`` of the filters (80%,
where notebook 03's loop ends), or ``--fraction`` (0.6: about where its headline network stops); arm (c) is asked for ``--faster`` (1.25) times the speedup arm (a) reached in the same seed
(measured after its final fine-tune: `measured_speedup`, deploy form, the benchmark batch).  Then all are timed
side by side and read on the test set once each: arm (c) meets the issue's target in a seed when it is at least
1.25x faster than (a) in the shared harness and its accuracy is within the paired noise of (a)'s or above it
(``gap ± noise``, points, the same test images).

Every arm has the same ranking batches, the same fine-tune steps per iteration (the profile's), the same loss
(distillation from the dense network, as the profile says) and the same final fine-tune; the total fine-tune steps
are printed, since a deeper run fine-tunes more.  Then, with nothing else running, the dense network and the arms
of a seed are timed in one interleaved harness (`measure.side_by_side`: deploy form and ONNX Runtime, batch 1
and the benchmark batch, one thread, freed memory kept, five rounds).

Usage::

    python benchmarks/latency_arms.py [--models small_vgg small_resnet] [--seeds 0 1 2] [--out build/latency_arms]

About 5 to 10 minutes per network and seed on 2 cores; each seed's result is saved as it finishes
(``<out>/<model>_seed<S>.json``) and read back on a second run (``--again`` measures it anew); the tables are
printed from all of them and written to ``<out>/latency_arms.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

from pruning_lib import measure
from pruning_lib.course import arms, experiment, lessons
from pruning_lib.course.paths import REPO_ROOT
from pruning_lib.course.profiles import get_profile
from pruning_lib.graph.groups import group_widths
from pruning_lib.measure import measured_speedup
from pruning_lib.recover.evaluation import correct
from pruning_lib.recover.iterative import prune_train_repeat

ARMS = ("flops", "flops, step", "latency")
ASKED = "asked 3x and 4x"


def run_arm(arm: str, baseline, loaders, profile, *, target: float | None, step: int, table_step: int,
            fraction: float | None = None):
    """One arm from the baseline: the loop, then the final fine-tune.  Returns (model, history, fine-tune steps)."""
    if arm == ASKED:
        model, history = arms.asked_for_the_claim(baseline, profile, speedup=target, params_reduction=4.0)
        steps = int(history["finetune_steps"].sum()) + int(history.attrs.get("final_steps", 0))
        return model, history, steps
    depth = {} if fraction is None else {"target_fraction": fraction}
    latency = {"target_fraction": None, "target_speedup": target, "flops_lambda": 0.0,
               "latency_batch": profile.benchmark_batch, "multiple_of": table_step}
    changes = {"flops": depth, "flops, step": {**depth, "multiple_of": step}, "latency": latency}[arm]
    schedule = experiment.schedule("taylor", profile, **changes)
    model, history = prune_train_repeat(baseline, loaders["train"], list(loaders["val"]), schedule,
                                        input_shape=profile.input_shape, progress=False)
    final = experiment.final_fine_tune(model, profile, teacher=baseline)
    model.eval()
    return model, history, int(history["finetune_steps"].sum()) + int(final["step"].max())


def run_seed(model_name: str, seed: int, *, faster: float, step: int, table_step: int, ask: float,
             fraction: float | None = None) -> dict:
    """The arms for one network and seed, timed side by side; a JSON-ready dict."""
    profile = get_profile("quick", f"model={model_name},seed={seed}")
    measure.keep_freed_memory()        # before anything is timed: tables, the loops' judges and the final harness alike
    baseline = experiment.load_baseline(profile, progress=False)
    loaders = experiment.target_loaders(profile)
    test_batches = list(loaders["test"])
    shape = (profile.benchmark_batch, *profile.input_shape)
    nets, histories, steps, seconds, targets = {"dense": baseline}, {}, {}, {}, {ASKED: ask}
    for arm in ARMS + ((ASKED,) if ask else ()):
        start = time.perf_counter()
        nets[arm], histories[arm], steps[arm] = run_arm(arm, baseline, loaders, profile, target=targets.get(arm),
                                                        step=step, table_step=table_step, fraction=fraction)
        seconds[arm] = time.perf_counter() - start
        if arm == "flops":         # what arm (c) is asked for, measured the way its own loop measures
            targets["latency"] = faster * measured_speedup(baseline, nets[arm], shape, num_threads=1)["speedup"]
        print(f"{model_name} seed {seed}: {arm} done in {seconds[arm]:.0f} s", file=sys.stderr, flush=True)
    table = measure.side_by_side(nets, profile.input_shape, [1, profile.benchmark_batch],
                                 forms=("deploy", "onnxruntime"), num_threads=1, rounds=5, min_run_time=0.2)
    correct_ = {name: correct(m, test_batches) for name, m in nets.items()}
    gaps = {f"{arm} vs {other}": lessons.compare("", {arm: correct_[arm], other: correct_[other]},
                                                    threshold_points=0.0)
            for arm, other in (("latency", "flops"), ("latency", "flops, step"), ("flops", "dense"),
                               ("latency", "dense"))}
    asked = None
    if ask:
        deploy = table[(table["form"] == "deploy") & (table["batch"] == profile.benchmark_batch)].set_index("model")
        a = deploy.loc[ASKED]
        asked = lessons.headline_lesson(correct_["dense"], correct_[ASKED], flops_ratio=float(a["flops_ratio"]),
                                        params_ratio=float(a["params_ratio"]), speedup=float(a["speedup"]),
                                        speedup_noise=float(a["speedup_max"] - a["speedup_min"]) / 2, min_speedup=ask)
    return {"model": model_name, "seed": seed, "step": step, "table_step": table_step, "targets": targets,
            "fraction": profile.target_fraction if fraction is None else fraction,
            "accuracy_points": {k: lessons.points(v) for k, v in correct_.items()},
            "gaps": {k: {"gap_points": g["gap_points"], "noise_points": g["noise_points"]} for k, g in gaps.items()},
            "asked": None if asked is None else {k: asked[k] for k in ("claim", "measured", "shows", "outcome",
                                                                       "gap_points", "noise_points")},
            "widths": {k: group_widths(m) for k, m in nets.items()}, "finetune_steps": steps,
            "iterations": {k: int(len(h) - 1) for k, h in histories.items()}, "seconds": seconds,
            "table": table.drop(columns=["accuracy"]).to_dict(orient="records"), "machine": measure.machine_info()}


def speed_ratios(result: dict) -> pd.DataFrame:
    """Per form and batch: each arm's speedup over dense, and the latency arm's speed over arms (a) and (b)."""
    t = pd.DataFrame(result["table"])
    rows = []
    for (form, batch), g in t.groupby(["form", "batch"]):
        ms = g.set_index("model")["latency_ms"]
        rows.append({"model": result["model"], "fraction": result.get("fraction", 0.8), "seed": result["seed"],
                     "form": form, "batch": batch,
                     **{f"speedup {arm}": ms["dense"] / ms[arm] for arm in ARMS},
                     "latency / flops": ms["flops"] / ms["latency"],
                     "latency / flops, step": ms["flops, step"] / ms["latency"],
                     "flops ratio latency": float(g.set_index("model").loc["latency", "flops_ratio"])})
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame) -> str:
    """A Markdown table of `df` (no index)."""
    rows = [list(map(str, df.columns)), ["---"] * len(df.columns), *[[str(v) for v in r] for r in df.itertuples(index=False)]]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def verdicts(results: list[dict], *, faster: float = 1.25, than_step: float = 1.1) -> pd.DataFrame:
    """Per network and seed: arm (c)'s speed over (a) and (b) at the benchmark batch in both runtimes (and at batch
    1), its paired accuracy gaps, and whether the issue's target is met: at least `faster` x (a) and `than_step` x
    (b) in both runtimes at the benchmark batch, each at equal accuracy (a gap not below minus its noise)."""
    rows = []
    for r in results:
        sp = speed_ratios(r).set_index(["form", "batch"])
        big = max(b for _, b in sp.index)
        ga, gb = r["gaps"]["latency vs flops"], r["gaps"]["latency vs flops, step"]
        tied = {k: g["gap_points"] >= -g["noise_points"] for k, g in (("a", ga), ("b", gb))}
        over_a = [sp.loc[(f, big), "latency / flops"] for f in ("deploy", "onnxruntime")]
        over_b = [sp.loc[(f, big), "latency / flops, step"] for f in ("deploy", "onnxruntime")]
        rows.append({"model": r["model"], "fraction": r.get("fraction", 0.8), "seed": r["seed"],
                     f"(c)/(a) deploy, {big}": round(over_a[0], 2), f"(c)/(a) ORT, {big}": round(over_a[1], 2),
                     "(c)/(a) deploy, 1": round(sp.loc[("deploy", 1), "latency / flops"], 2),
                     "(c)/(a) ORT, 1": round(sp.loc[("onnxruntime", 1), "latency / flops"], 2),
                     f"(c)/(b) deploy, {big}": round(over_b[0], 2), f"(c)/(b) ORT, {big}": round(over_b[1], 2),
                     "(c) − (a), points": f"{ga['gap_points']:+.1f} ± {ga['noise_points']:.1f}",
                     "(c) − (b), points": f"{gb['gap_points']:+.1f} ± {gb['noise_points']:.1f}",
                     "fine-tune steps a/b/c": "/".join(str(r["finetune_steps"][a]) for a in ARMS),
                     "vs (a)": "met" if min(over_a) >= faster and tied["a"] else "missed",
                     "vs (b)": "met" if min(over_b) >= than_step and tied["b"] else "missed"})
    return pd.DataFrame(rows)


def report(results: list[dict]) -> str:
    """The README's tables: the target's verdicts, speed (every form and batch), accuracy (test points, paired gaps)."""
    speed = pd.concat([speed_ratios(r) for r in results], ignore_index=True)
    lines = ["The target (arm (c) against (a) and (b), at equal accuracy):", "", markdown(verdicts(results)), "",
             "Speed (ratios of median latencies in one interleaved harness; > 1: the latency arm is faster):", "",
             markdown(speed.round(2)), "",
             "Test accuracy (points) and paired gaps (gap ± noise, points):", ""]
    acc = pd.DataFrame([{"model": r["model"], "fraction": r.get("fraction", 0.8), "seed": r["seed"],
                         **{k: round(v, 1) for k, v in r["accuracy_points"].items()},
                         **{k: f"{g['gap_points']:+.1f} ± {g['noise_points']:.1f}" for k, g in r["gaps"].items()},
                         "fine-tune steps": "/".join(str(r["finetune_steps"][a]) for a in ARMS),
                         "iterations": "/".join(str(r["iterations"][a]) for a in ARMS),
                         "(c) asked": round(r["targets"]["latency"], 2)} for r in results])
    lines.append(markdown(acc))
    asked = [r for r in results if r.get("asked")]
    if asked:
        lines += ["", "Asked for the post's 3x and 4x (deploy form, batch 64), judged on the post's claim:", "",
                  markdown(pd.DataFrame([{"model": r["model"], "seed": r["seed"],
                                          "speedup": round(r["asked"]["measured"]["speedup"], 2),
                                          "params ratio": round(r["asked"]["measured"]["params_ratio"], 2),
                                          "points lost": round(r["asked"]["measured"]["dense"] - r["asked"]["measured"]["pruned"], 2),
                                          "FLOPs ratio": round(r["asked"]["measured"]["flops_ratio"], 2),
                                          "speedup / FLOPs": round(r["asked"]["measured"]["speedup_per_flops"], 2),
                                          "claim": r["asked"].get("outcome", r["asked"]["shows"])} for r in asked]))]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["small_vgg", "small_resnet"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--faster", type=float, default=1.25, help="arm (c) is asked for this x arm (a)'s speedup")
    parser.add_argument("--step", type=int, default=16, help="arm (b)'s width step")
    parser.add_argument("--table-step", type=int, default=8, help="arm (c)'s widths: blocks of this many channels")
    parser.add_argument("--ask", type=float, default=3.0, help="the speed the fourth arm asks for, with 4x fewer "
                        "parameters (0: no fourth arm)")
    parser.add_argument("--fraction", type=float, default=None,
                        help="the share of filters arms (a) and (b) remove (default: the profile's, 0.8)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "latency_arms")
    parser.add_argument("--again", action="store_true", help="measure seeds whose result is already saved")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PRUNING_CHECKPOINT_DIR", str(args.out / "checkpoints"))   # baselines per seed, not the demo's
    results, tag = [], "" if args.fraction is None else f"_fraction{args.fraction:g}"
    for model_name in args.models:
        for seed in args.seeds:
            path = args.out / f"{model_name}{tag}_seed{seed}.json"
            if path.exists() and not args.again:
                results.append(json.loads(path.read_text()))
                continue
            result = run_seed(model_name, seed, faster=args.faster, step=args.step, table_step=args.table_step,
                              ask=args.ask, fraction=args.fraction)
            path.write_text(json.dumps(result, indent=1))
            results.append(result)
    text = report(results)
    (args.out / f"latency_arms{tag}.md").write_text(text + "\n")
    print("machine:", json.dumps(measure.machine_info()))
    print(text)


if __name__ == "__main__":
    main()
