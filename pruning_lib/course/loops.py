"""Notebook 03's Prune–Train–Repeat runs, headless, on several processes: the long part of the full profile.

    torchrun --standalone --nproc_per_node=4 -m pruning_lib.course.loops --profile full

Each run is `arms.checkpointed_run` with exactly the arguments notebook 03 gives it (Taylor, random, and Taylor
with the other fine-tuning loss), so its checkpoint is the one the notebook looks for: run the notebooks
afterwards (``benchmarks/run_full_profile.sh N`` does both) and notebook 03 reads the finished runs back instead
of running them in its one kernel.  It starts from notebook 01's baseline in ``checkpoints/`` (rank 0 makes it
first, with notebook 01's call, when it is missing).  The loaders' batch size is
per process: N processes fine-tune with N times the profile's batch (``PRUNING_OVERRIDES=batch_size=...``
divides it to keep the global batch).
"""

from __future__ import annotations

import argparse

from .. import distributed
from . import arms, experiment
from .profiles import Profile, get_profile


def notebook_03_runs(profile: Profile) -> list[tuple[str, dict]]:
    """``(criterion, schedule changes)`` of notebook 03's `run` calls, in its order."""
    return [("taylor", {}), ("random", {}), ("taylor", {"distill": 0.0 if profile.distill else 0.7})]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=None, help="quick or full (default: $PRUNING_PROFILE, else quick)")
    parser.add_argument("--overrides", default="", help="profile fields for this run (added to $PRUNING_OVERRIDES)")
    args = parser.parse_args(argv)
    collective = distributed.join_from_environment()
    profile = get_profile(args.profile, args.overrides)
    if collective.rank == 0:                   # made here (notebook 01's call) if missing, by one process only
        experiment.load_baseline(profile, progress=False)
    collective.barrier()
    baseline = experiment.load_baseline(profile, progress=False)
    loaders = experiment.target_loaders(profile)
    val_batches = list(loaders["val"])
    for criterion, changes in notebook_03_runs(profile):
        _, history, _ = arms.checkpointed_run(baseline, profile, criterion, loaders["train"], val_batches, **changes)
        if collective.rank == 0:
            last = history.iloc[-1]
            print(f"{criterion} {changes or ''}: {len(history) - 1} iterations, {last['gflops']:.3f} GFLOPs, "
                  f"validation {100 * last['accuracy_after_finetune']:.2f}% ({collective.world_size} processes)",
                  flush=True)


if __name__ == "__main__":
    main()
