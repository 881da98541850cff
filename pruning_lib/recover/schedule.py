"""What one Prune–Train–Repeat run does: its `PruningSchedule`, and the columns of its history."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["HISTORY_COLUMNS", "PruningSchedule"]

HISTORY_COLUMNS = ("iteration", "filters_removed", "fraction_removed", "params", "gflops",
                   "accuracy_before_finetune", "accuracy_after_finetune", "finetune_steps", "time_s")


@dataclass(frozen=True)
class PruningSchedule:
    """What one Prune–Train–Repeat run does.  Give at least one target.

    Attributes:
        criterion: a name from ``rank.criteria.CRITERIA`` ("taylor", "l1", "apoz", "random", ...).
        filters_per_iteration: filters removed per iteration (the paper's and the post's k) ...
        fraction_per_iteration: ... or, when set, this share of the filters *left* (so every cut is
            equally deep: the last iterations remove fewer filters than the first).
        finetune_steps: optimisation steps (batches) of fine-tuning after each removal.
        lr: Adam learning rate of that fine-tuning (a fresh optimizer each iteration).
        lr_schedule: ``"constant"`` or ``"cosine"`` (from `lr` to 0 within each fine-tune; `train.fit`).
        rank_batches: training batches the criterion sees per iteration.
        target_fraction: stop once this fraction of all prunable filters is gone (the last
            iteration removes fewer filters to land on it exactly).
        target_gflops: ... or once GFLOPs per image are at most this (may overshoot by one iteration).
        target_speedup: ... or once the network runs this many times faster than the starting one, measured end
            to end on this machine beyond the noise (`measure.measured_speedup`, in `latency_form` at batch
            `latency_batch` with `latency_threads` threads) ...
        target_params_reduction: ... and/or once it has this many times fewer parameters.  With either of these
            two every iteration's cut is planned for all the targets given at once (`cost.budgets.BudgetPlanner`:
            time by a latency model of the network's blocks measured on this machine, parameters and FLOPs
            counted exactly; `target_gflops` then joins as a third budget): one width per group, in steps of
            `multiple_of` (or `latency_step` when `multiple_of` is 1), chosen at the least importance so that each
            target covers ``fraction_per_iteration`` (default 0.1) of its remaining way per iteration, all arriving
            together; the time saved is checked end to end before the cut is made.  `flops_lambda` must be 0.
        min_accuracy: ... or before the validation metric after fine-tuning falls below this (accuracy: a fraction;
            a metric of the caller's: on its own scale):
            the iteration that breaks the floor is recorded, but the model returned (and
            checkpointed) is the one from the iteration before it.
        flops_lambda: FLOPs regularisation strength λ (0: off); see `regularised_scores`.
        min_keep: the floor of filters kept in every layer (>= 1).
        max_fraction: a per-layer cap: no layer loses more than this share of its starting filters
            (`plan.layer_floors`, as Torch-Pruning's ``max_pruning_ratio``); None: no cap.
        multiple_of: every layer that loses filters keeps a multiple of this many (16 suits
            AVX-512 CPUs: odd widths vectorise badly); each iteration then removes at most
            `filters_per_iteration`, in blocks of this size.
        distill: weight α of the dense network's soft predictions in the fine-tuning loss
            (`train.KnowledgeDistillation`, the starting model is the teacher); 0: plain cross-entropy.
        temperature: the distillation temperature T.
        seed: seeds the batches, dropout and the "random" criterion of every iteration.
        latency_form, latency_batch, latency_threads, latency_step: where and how a speed target is measured
            (a PyTorch form or a registered runtime, the batch, the threads) and the widths' grid when
            `multiple_of` is 1.
        keep_whole: groups never pruned (their names), e.g. those of the layers `pruning_lib.prune` is told to
            exclude.
    """

    criterion: str = "taylor"
    filters_per_iteration: int = 48
    fraction_per_iteration: float | None = None
    finetune_steps: int = 40
    lr: float = 5e-4
    lr_schedule: str = "constant"
    rank_batches: int = 4
    target_fraction: float | None = None
    target_gflops: float | None = None
    target_speedup: float | None = None
    target_params_reduction: float | None = None
    min_accuracy: float | None = None
    flops_lambda: float = 0.0
    min_keep: int = 1
    max_fraction: float | None = None
    multiple_of: int = 1
    distill: float = 0.0
    temperature: float = 4.0
    seed: int = 0
    latency_form: str = "deploy"
    latency_batch: int = 64
    latency_threads: int = 1
    latency_step: int = 8
    keep_whole: tuple[str, ...] = ()

    def __post_init__(self):
        if (self.target_fraction is None and self.target_gflops is None and self.min_accuracy is None
                and self.target_speedup is None and self.target_params_reduction is None):
            raise ValueError("give a target: target_fraction, target_gflops, target_speedup, target_params_reduction "
                             "or min_accuracy")
        if self.target_speedup is not None and not self.target_speedup > 1:
            raise ValueError(f"target_speedup is how many times faster, > 1; got {self.target_speedup}")
        if self.target_params_reduction is not None and not self.target_params_reduction > 1:
            raise ValueError(f"target_params_reduction is how many times fewer parameters, > 1; got "
                             f"{self.target_params_reduction}")
        if self.budgeted and self.flops_lambda:
            raise ValueError("target_speedup and target_params_reduction weigh each cut by what it saves; flops_lambda "
                             "would weigh it by FLOPs as well: set flops_lambda=0")
        if self.target_fraction is not None and not 0 < self.target_fraction < 1:
            raise ValueError(f"target_fraction must be in (0, 1), got {self.target_fraction}")
        if self.target_gflops is not None and self.target_gflops <= 0:
            raise ValueError(f"target_gflops must be > 0, got {self.target_gflops}")
        if self.min_accuracy is not None and not math.isfinite(self.min_accuracy):
            raise ValueError(f"min_accuracy is the lowest metric to accept, a finite number; got {self.min_accuracy}")
        if self.filters_per_iteration < 1 or self.finetune_steps < 0 or self.rank_batches < 1:
            raise ValueError("filters_per_iteration and rank_batches must be >= 1 and finetune_steps >= 0; got "
                             f"{self.filters_per_iteration}, {self.rank_batches}, {self.finetune_steps}")
        if self.min_keep < 1:
            raise ValueError(f"min_keep must be >= 1 so no layer is emptied, got {self.min_keep}")
        if self.fraction_per_iteration is not None and not 0 < self.fraction_per_iteration < 1:
            raise ValueError(f"fraction_per_iteration must be in (0, 1), got {self.fraction_per_iteration}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.max_fraction is not None and not 0 < self.max_fraction <= 1:
            raise ValueError(f"max_fraction must be in (0, 1], got {self.max_fraction}")
        if self.multiple_of < 1:
            raise ValueError(f"multiple_of must be >= 1, got {self.multiple_of}")
        if self.flops_lambda < 0:
            raise ValueError(f"flops_lambda must be >= 0, got {self.flops_lambda}")
        if not 0 <= self.distill <= 1 or self.temperature <= 0:
            raise ValueError(f"distill must be in [0, 1] and temperature > 0, got {self.distill}, {self.temperature}")


    @property
    def budgeted(self) -> bool:
        """Whether each cut is planned for budgets (a speedup or a parameter reduction) by `cost.budgets`."""
        return self.target_speedup is not None or self.target_params_reduction is not None
