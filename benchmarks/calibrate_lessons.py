"""Calibrate the quick profile's lessons: run notebooks 01-03 for several seeds and tabulate every lesson.

    python benchmarks/calibrate_lessons.py [--seeds 0 1 2 3] [--jobs 2] [--overrides "finetune_steps=40"]
    python benchmarks/calibrate_lessons.py --seeds 0 1 2 3 --table-only   # the table of runs already made

Each seed is a complete run of the notebooks exactly as `make demo` runs them (papermill, the quick profile
with ``seed=S`` added to the overrides): another draw of the 400 training and 400 validation images, another
head initialisation and batch order.  Every seed writes its own reports/checkpoints under
``build/calibration/seed<S>/``; this script reads their ``lessons.json`` and prints one table (lesson x seed:
gap, noise, shows) for the README, and writes ``build/calibration.json``.  A lesson is taught as shown only if
it shows in every seed.  Runs with ``--jobs 2`` at one torch thread each (the profile's `threads`).

The headline's speed is notebook 04's measurement: after every seed has finished training (nothing else
running), each seed's dense and headline networks are timed one seed at a time with notebook 04's protocol
(deploy form, the profile's benchmark batch, one thread, freed memory kept, three rounds), and the speedup is
added to that seed's headline entry (`lessons.with_speedup`, written back to its lessons.json).  ``--no-timing``
skips it; ``--table-only`` times the seeds whose entry has no speedup yet unless ``--no-timing`` is given.

**The post's claim as one request** (``headline_asked``, notebook 04's loop): then, one seed at a time, each seed's
baseline is pruned by Prune–Train–Repeat asked for 3x faster and 4x fewer parameters at once
(`course.arms.asked_for_the_claim`: measured here, deploy form, the benchmark batch, one thread), fine-tuned, timed
against the dense network in notebook 04's harness and judged on the claim with its noise (`lessons.headline_lesson`:
met, missed or within the noise).  ``--no-asked`` skips it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pruning_lib import measure
from pruning_lib.course import arms, experiment, lessons, reports
from pruning_lib.recover.evaluation import correct
from pruning_lib.course.paths import REPO_ROOT
from pruning_lib.course.profiles import get_profile
from pruning_lib.measure import machine_info

COMMITTED = REPO_ROOT / "benchmarks" / "results" / "calibration.json"
LESSONS = ("criteria_differ", "too_much_at_once", "headline", "headline_asked", "pruning_beats_scratch",
           "random_catches_up")


def run_seed(seed: int, overrides: str, out: Path, only: str) -> dict:
    """Run the notebooks for one seed in a subprocess; return its lessons.json (or the error)."""
    folder = out.resolve() / f"seed{seed}"
    env = {**os.environ, "PRUNING_REPORTS_DIR": str(folder / "reports"), "PRUNING_CHECKPOINT_DIR": str(folder / "checkpoints"),
           "PRUNING_BUILD_DIR": str(folder / "build"), "PRUNING_PROFILE": "quick"}
    args = [sys.executable, "-m", "pruning_lib.course.demo", "--overrides", ",".join(filter(None, [overrides, f"seed={seed}"]))]
    start = time.perf_counter()
    done = []
    for nb in only.split(","):
        proc = subprocess.run([*args, "--only", nb], env=env, capture_output=True, text=True, cwd=REPO_ROOT)
        if proc.returncode:
            return {"seed": seed, "error": proc.stderr[-2000:], "seconds": time.perf_counter() - start}
        done.append(nb)
    lessons = json.loads((folder / "reports" / "lessons.json").read_text())
    return {"seed": seed, "lessons": lessons, "seconds": time.perf_counter() - start}


def time_headline(result: dict, overrides: str, out: Path) -> dict:
    """Add notebook 04's speedup to one seed's headline entry (see the module docstring); returns `result`."""
    entry = result.get("lessons", {}).get("headline")
    if entry is None or entry["measured"].get("speedup") is not None:
        return result
    folder = out.resolve() / f"seed{result['seed']}"
    saved = os.environ.get("PRUNING_CHECKPOINT_DIR")
    os.environ["PRUNING_CHECKPOINT_DIR"] = str(folder / "checkpoints")
    try:
        profile = get_profile("quick", ",".join(filter(None, [overrides, f"seed={result['seed']}"])))
        missing = [p for p in (experiment.baseline_path(profile), experiment.pruned_path("taylor", profile)) if not p.exists()]
        if missing:      # never train a baseline again just to time it
            print(f"seed {result['seed']}: not timed, {', '.join(map(str, missing))} missing", file=sys.stderr)
            return result
        nets = {"dense": experiment.load_baseline(profile, progress=False),
                "taylor": experiment.load_pruned_model("taylor", profile)[0]}
    finally:
        os.environ.pop("PRUNING_CHECKPOINT_DIR") if saved is None else os.environ.update(PRUNING_CHECKPOINT_DIR=saved)
    measure.keep_freed_memory()
    table = measure.side_by_side(nets, profile.input_shape, [profile.benchmark_batch], forms=("deploy",),
                                 num_threads=1, min_run_time=0.2, rounds=3)
    t = table.set_index("model").loc["taylor"]
    timed = lessons.with_speedup(entry, float(t["speedup"]), float(t["speedup_max"] - t["speedup_min"]) / 2)
    result["lessons"] = reports.update_lessons({"headline": timed}, folder / "reports" / "lessons.json")
    return result


def seed_profile(seed: int, overrides: str):
    return get_profile("quick", ",".join(filter(None, [overrides, f"seed={seed}"])))


def ask_for_the_claim(result: dict, overrides: str, out: Path) -> dict:
    """Add ``headline_asked`` to one seed's lessons (see the module docstring); returns `result`."""
    if "lessons" not in result or "headline_asked" in result["lessons"]:
        return result
    folder = out.resolve() / f"seed{result['seed']}"
    saved = os.environ.get("PRUNING_CHECKPOINT_DIR")
    os.environ["PRUNING_CHECKPOINT_DIR"] = str(folder / "checkpoints")
    try:
        profile = seed_profile(result["seed"], overrides)
        if not experiment.baseline_path(profile).exists():      # never train a baseline again for this
            print(f"seed {result['seed']}: not asked, {experiment.baseline_path(profile)} missing", file=sys.stderr)
            return result
        dense = experiment.load_baseline(profile, progress=False)
        measure.keep_freed_memory()
        start = time.perf_counter()
        asked, history = arms.asked_for_the_claim(dense, profile)
        seconds = time.perf_counter() - start
    finally:
        os.environ.pop("PRUNING_CHECKPOINT_DIR") if saved is None else os.environ.update(PRUNING_CHECKPOINT_DIR=saved)
    table = measure.side_by_side({"dense": dense, "asked": asked}, profile.input_shape, [profile.benchmark_batch],
                                 forms=("deploy",), num_threads=1, min_run_time=0.2, rounds=3).set_index("model")
    test = list(experiment.target_loaders(profile)["test"])
    t = table.loc["asked"]
    entry = lessons.headline_lesson(correct(dense, test), correct(asked, test), flops_ratio=float(t["flops_ratio"]),
                                    params_ratio=float(t["params_ratio"]), speedup=float(t["speedup"]),
                                    speedup_noise=float(t["speedup_max"] - t["speedup_min"]) / 2)
    entry = dict(entry, claim=entry["claim"].replace("with Taylor", "with Taylor, asked for 3x faster and 4x fewer "
                                                                    "parameters"))
    entry["measured"]["loop"] = {"iterations": int(len(history) - 1), "seconds": round(seconds),
                                 "loop_speedup": float(history["speedup"].iloc[-1])}
    result["lessons"] = reports.update_lessons({"headline_asked": entry}, folder / "reports" / "lessons.json")
    return result


def read_seed(seed: int, out: Path) -> dict:
    """A seed's lessons.json from an earlier run (``--table-only``), or the error saying it is missing."""
    path = out.resolve() / f"seed{seed}" / "reports" / "lessons.json"
    if not path.exists():
        return {"seed": seed, "error": f"{path} does not exist: run this seed first", "seconds": 0.0}
    return {"seed": seed, "lessons": json.loads(path.read_text()), "seconds": 0.0}


def table(results: list[dict]) -> str:
    """A Markdown table: one row per lesson, one column per seed ("gap ± noise" and met, missed or within the
    noise), and whether it is met in every seed ("—" for a lesson no seed ran)."""
    seeds = [r["seed"] for r in results]
    lines = ["| lesson | " + " | ".join(f"seed {s}" for s in seeds) + " | met in every seed |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for name in LESSONS:
        cells, every = [], True
        for r in results:
            e = r.get("lessons", {}).get(name)
            if e is None:
                cells.append("—")
                every = False
                continue
            checks = e["measured"].get("checks", {})
            speed = e["measured"].get("speedup")
            result = lessons.outcome(e)                    # met, missed or within the noise, by today's rule
            shown = result == lessons.MET
            if name.startswith("headline") and speed is None:     # not timed: no speed yet
                shown = all(ok == lessons.MET for k, ok in checks.items() if k != "speedup")
                mark = f"{'met' if shown else result} (speed: not timed)"
            elif name.startswith("headline"):
                failed = [k for k, ok in checks.items() if ok == lessons.MISSED]
                noisy = [k for k, ok in checks.items() if ok == lessons.WITHIN]
                mark = (f"{result} ({speed:.2f}x faster for {e['measured']['flops_ratio']:.1f}x fewer FLOPs: "
                        f"{speed / e['measured']['flops_ratio']:.2f}" + (f"; missed: {', '.join(failed)}" if failed else "")
                        + (f"; within the noise: {', '.join(noisy)}" if noisy else "") + ")")
            else:
                mark = "reported" if e["reported_only"] else result
            every &= shown
            cells.append(f"{e['gap_points']:+.1f} ± {e['noise_points']:.1f} {mark}")
        reported = all(r.get("lessons", {}).get(name, {}).get("reported_only") for r in results)
        ran = any(name in r.get("lessons", {}) for r in results)
        verdict = "—" if not ran else "(reported only)" if reported else "yes" if every else "no"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--overrides", default="", help="extra profile overrides for every seed")
    parser.add_argument("--only", default="01,02,03", help="the notebooks to run, in order")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "calibration")
    parser.add_argument("--no-timing", action="store_true", help="do not time the headline networks")
    parser.add_argument("--no-asked", action="store_true", help="do not run the loop asked for 3x and 4x")
    parser.add_argument("--commit", action="store_true", help=f"also write {COMMITTED.relative_to(REPO_ROOT)}, "
                        "the calibration the notebooks print beside their numbers")
    parser.add_argument("--table-only", action="store_true",
                        help="run nothing: tabulate the lessons.json the seeds' folders already hold")
    args = parser.parse_args(argv)
    print("machine:", json.dumps(machine_info()), flush=True)
    if args.table_only:
        results = [read_seed(s, args.out) for s in args.seeds]
    else:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(lambda s: run_seed(s, args.overrides, args.out, args.only), args.seeds))
    if not args.no_timing:                  # one seed at a time, after all training: nothing else on the cores
        results = [time_headline(r, args.overrides, args.out) for r in results]
    if not args.no_asked:                   # the loop times networks too: one seed at a time
        results = [ask_for_the_claim(r, args.overrides, args.out) for r in results]
    for r in results:
        if "error" in r:
            print(f"seed {r['seed']} failed:\n{r['error']}", file=sys.stderr)
    print(table(results))
    print("seconds per seed:", {r["seed"]: round(r["seconds"]) for r in results})
    if args.table_only:
        return
    text = json.dumps({"machine": machine_info(), "overrides": args.overrides, "results": results}, indent=1,
                      allow_nan=True)
    (args.out.parent / "calibration.json").write_text(text)
    if args.commit:                          # what the notebooks read (calibration.read_calibration)
        COMMITTED.parent.mkdir(parents=True, exist_ok=True)
        COMMITTED.write_text(text)
        print(f"written to {COMMITTED}: commit it")


if __name__ == "__main__":
    main()
