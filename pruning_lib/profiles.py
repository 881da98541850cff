"""Profiles: **quick** (default: offline, CPU, minutes) and **full** (the seed's real experiment, GPU).

Choose with the ``PRUNING_PROFILE`` environment variable or a notebook's ``parameters`` cell.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Profile:
    """Every knob of one run of the course, in one place (print it in a notebook)."""

    name: str
    dataset: str                    # "fashion-mnist", "oxford-pets" or "kaggle"
    model: str                      # "small_vgg" or "vgg16"
    input_shape: tuple[int, int, int]
    batch_size: int
    # fine-tuning the baseline (transfer learning)
    head_steps: int                 # stage 1: features frozen, as in the seed
    finetune_steps: int             # stage 2: all layers, at most this many steps ...
    patience: int                   # ... stopping when validation accuracy stops improving
    eval_every: int
    lr: float
    # ranking and pruning
    rank_batches: int               # batches used to rank filters
    oracle_batches: int
    filters_per_iteration: int
    prune_finetune_steps: int       # fine-tune steps after each pruning iteration
    prune_lr: float
    target_fraction: float          # fraction of all conv filters to remove
    flops_lambda: float             # the paper's FLOPs regularisation strength (0: off)
    channel_multiple: int           # every pruned layer keeps a multiple of this many filters (CPU vector width)
    benchmark_batch: int            # batch size used for the speedup figure
    distill: float = 0.0            # weight of the dense network's soft predictions when fine-tuning a pruned one
    distill_temperature: float = 4.0
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


QUICK = Profile(
    name="quick", dataset="fashion-mnist", model="small_vgg", input_shape=(1, 28, 28), batch_size=128,
    head_steps=40, finetune_steps=600, patience=4, eval_every=25, lr=1e-3,
    rank_batches=4, oracle_batches=1, filters_per_iteration=48, prune_finetune_steps=40, prune_lr=5e-4,
    target_fraction=0.6, flops_lambda=0.1, channel_multiple=16, benchmark_batch=64,
    distill=0.7,    # 3,200 training images: without the dense teacher the pruned network lost ~1 point more
)

FULL = Profile(
    name="full", dataset="oxford-pets", model="vgg16", input_shape=(3, 224, 224), batch_size=32,
    head_steps=200, finetune_steps=1500, patience=4, eval_every=100, lr=1e-4,
    rank_batches=10, oracle_batches=2, filters_per_iteration=512, prune_finetune_steps=300, prune_lr=1e-4,
    target_fraction=0.6, flops_lambda=0.0, channel_multiple=16, benchmark_batch=16,
    distill=0.0,    # the seed's recipe (plain fine-tuning); 0.7 distils from the dense VGG16 (slower steps)
)

PROFILES = {"quick": QUICK, "full": FULL}


def get_profile(name: str | None = None) -> Profile:
    """The profile called `name`, else ``$PRUNING_PROFILE``, else quick."""
    name = name or os.environ.get("PRUNING_PROFILE") or "quick"
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)} "
                         "(set PRUNING_PROFILE or the notebook's parameters cell)")
    return PROFILES[name]
