"""Profiles: **quick** (default: offline, CPU, minutes) and **full** (the post's real experiment, GPU).

Choose with the ``PRUNING_PROFILE`` environment variable or a notebook's ``parameters`` cell.

One vocabulary: the fields a Prune–Train–Repeat run needs have exactly the names of
`iterative.PruningSchedule`'s fields (``finetune_steps``, ``lr``, ``multiple_of``, ...), so the
profile, the schedule, the checkpoints' metadata and the reports all say the same thing.  The
baseline's own settings are prefixed ``baseline_``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields

__all__ = ["FULL", "PROFILES", "QUICK", "Profile", "SCHEDULE_FIELDS", "get_profile"]

#: The profile fields that `experiment.schedule` passes to `iterative.PruningSchedule` under the same names.
SCHEDULE_FIELDS = ("filters_per_iteration", "finetune_steps", "lr", "rank_batches", "target_fraction",
                   "flops_lambda", "multiple_of", "distill", "temperature", "seed")


@dataclass(frozen=True)
class Profile:
    """Every knob of one run of the course, in one place (print it in a notebook)."""

    name: str
    dataset: str                    # "fashion-mnist", "oxford-pets" or "kaggle"
    model: str                      # "small_vgg" or "vgg16"
    input_shape: tuple[int, int, int]
    batch_size: int
    # fine-tuning the baseline (transfer learning)
    baseline_head_steps: int        # stage 1: features frozen, as in the post
    baseline_max_steps: int         # stage 2: all layers, at most this many steps ...
    patience: int                   # ... stopping when validation accuracy stops improving
    eval_every: int
    baseline_lr: float
    # ranking and Prune–Train–Repeat (the names of PruningSchedule's fields)
    rank_batches: int               # batches used to rank filters
    oracle_batches: int
    filters_per_iteration: int
    finetune_steps: int             # fine-tune steps after each pruning iteration
    lr: float                       # learning rate of those fine-tunes
    target_fraction: float          # fraction of all conv filters to remove
    flops_lambda: float             # the paper's FLOPs regularisation strength (0: off)
    multiple_of: int                # every pruned layer keeps a multiple of this many filters (CPU vector width)
    final_max_steps: int            # the final fine-tune of a pruned network: at most this many steps
    benchmark_batch: int            # batch size used for the speedup figure
    distill: float = 0.0            # weight of the dense network's soft predictions when fine-tuning a pruned one
    temperature: float = 4.0        # the distillation temperature
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


QUICK = Profile(
    name="quick", dataset="fashion-mnist", model="small_vgg", input_shape=(1, 28, 28), batch_size=128,
    baseline_head_steps=40, baseline_max_steps=600, patience=4, eval_every=25, baseline_lr=1e-3,
    rank_batches=4, oracle_batches=1, filters_per_iteration=48, finetune_steps=40, lr=5e-4,
    target_fraction=0.6, flops_lambda=0.1, multiple_of=16, final_max_steps=600, benchmark_batch=64,
    distill=0.7,    # 3,200 training images: without the dense teacher the pruned network lost ~1 point more
)

FULL = Profile(
    name="full", dataset="oxford-pets", model="vgg16", input_shape=(3, 224, 224), batch_size=32,
    baseline_head_steps=200, baseline_max_steps=1500, patience=4, eval_every=100, baseline_lr=1e-4,
    rank_batches=10, oracle_batches=2, filters_per_iteration=512, finetune_steps=300, lr=1e-4,
    target_fraction=0.6, flops_lambda=0.0, multiple_of=16, final_max_steps=1500, benchmark_batch=16,
    distill=0.0,    # the post's recipe (plain fine-tuning); 0.7 distils from the dense VGG16 (slower steps)
)

PROFILES = {"quick": QUICK, "full": FULL}
assert set(SCHEDULE_FIELDS) <= {f.name for f in fields(Profile)}


def get_profile(name: str | None = None) -> Profile:
    """The profile called `name`, else ``$PRUNING_PROFILE``, else quick."""
    name = name or os.environ.get("PRUNING_PROFILE") or "quick"
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)} "
                         "(set PRUNING_PROFILE or the notebook's parameters cell)")
    return PROFILES[name]
