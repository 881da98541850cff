"""Notebook 03's (or 05's) Prune–Train–Repeat runs, headless, on one or several processes.

    torchrun --standalone --nproc_per_node=4 -m pruning_lib.course.loops --profile full
    python -m pruning_lib.course.loops --notebook 05

Each run is `arms.checkpointed_run` with exactly the arguments the notebook gives it (notebook 03: Taylor,
random, and Taylor with the other fine-tuning loss; notebook 05: `resnet.pruning_run` for Taylor and random), so
its checkpoint is the one the notebook looks for: run the notebooks afterwards and the notebook reads the finished
runs back instead of running them in its one kernel.  ``benchmarks/run_full_profile.sh N`` does that on N
processes (the long part of the full profile); ``make demo`` trains the loops in a second process beside another
notebook.  It starts from the notebook's baseline in ``checkpoints/`` (rank 0 makes it first, with the notebook's
call, when it is missing), with the profile's thread count, as the notebook does.  The loaders' batch size is
per process: N processes fine-tune with N times the profile's batch (``PRUNING_OVERRIDES=batch_size=...``
divides it to keep the global batch).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import torch

from .. import distributed
from . import arms, experiment, resnet
from .profiles import Profile, get_profile


def notebook_03_runs(profile: Profile) -> list[tuple[str, dict]]:
    """``(criterion, schedule changes)`` of notebook 03's `run` calls, in its order."""
    return [("taylor", {}), ("random", {}), ("taylor", {"distill": 0.0 if profile.distill else 0.7})]


def notebook_05_runs(profile: Profile) -> list[tuple[str, dict]]:
    """``(criterion, schedule changes)`` of notebook 05's `resnet.pruning_run` calls, in its order."""
    return [(criterion, resnet.schedule_changes(profile)) for criterion in ("taylor", "random")]


#: Per notebook: its runs, and the function that makes each run.
NOTEBOOKS: dict[str, tuple[Callable[[Profile], list], Callable]] = {
    "03": (notebook_03_runs, arms.checkpointed_run),
    "05": (notebook_05_runs, resnet.pruning_run),
}


def notebook_profile(notebook: str, name: str | None = None, overrides: str = "") -> Profile:
    """The profile the notebook's setup cell makes: notebook 05 sets its ResNet before the overrides, as its cell does."""
    name = name or os.environ.get("PRUNING_PROFILE") or "quick"
    model = resnet.MODELS.get(name) if notebook == "05" else None
    return get_profile(name, ",".join(filter(None, [model and f"model={model}", overrides])))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=None, help="quick or full (default: $PRUNING_PROFILE, else quick)")
    parser.add_argument("--overrides", default="", help="profile fields for this run (added to $PRUNING_OVERRIDES)")
    parser.add_argument("--notebook", choices=sorted(NOTEBOOKS), default="03", help="whose loops to run (default 03)")
    parser.add_argument("--runs", default=None, help="which of the notebook's runs, by position from 0 in its order, "
                        "e.g. 1,2 (default: all)")
    args = parser.parse_args(argv)
    collective = distributed.join_from_environment()
    runs, run = NOTEBOOKS[args.notebook]
    profile = notebook_profile(args.notebook, args.profile, args.overrides)
    chosen = runs(profile)
    if args.runs:
        positions = [int(i) for i in args.runs.split(",") if i.strip().isdigit()]
        if len(positions) != len(args.runs.split(",")) or not all(i < len(chosen) for i in positions):
            parser.error(f"--runs {args.runs}: notebook {args.notebook} has runs 0 to {len(chosen) - 1}")
        chosen = [chosen[i] for i in positions]
    if profile.threads:
        torch.set_num_threads(profile.threads)    # the notebook's thread count: the same run as in its kernel
    if collective.rank == 0:                   # made here (notebook 01's call) if missing, by one process only
        experiment.load_baseline(profile, progress=False)
    collective.barrier()
    baseline = experiment.load_baseline(profile, progress=False)
    loaders = experiment.target_loaders(profile)
    val_batches = list(loaders["val"])
    for criterion, changes in chosen:
        _, history, _ = run(baseline, profile, criterion, loaders["train"], val_batches, **changes)
        if collective.rank == 0:
            last = history.iloc[-1]
            print(f"{criterion} {changes or ''}: {len(history) - 1} iterations, {last['gflops']:.3f} GFLOPs, "
                  f"validation {100 * last['accuracy_after_finetune']:.2f}% ({collective.world_size} processes)",
                  flush=True)


if __name__ == "__main__":
    main()
