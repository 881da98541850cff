"""The face of the library: `prune` your own trained model with Prune–Train–Repeat, in one call.

    import pruning_lib
    pruned, history = pruning_lib.prune(model, example_inputs, train_loader, val_loader,
                                        flops_reduction=2.0, checkpoint="prune.pt")

Everything it does is the method of the rest of the library: channel groups from the model's data flow
(`graph`), Taylor scores (`rank`), a plan (`plan`), exact surgery (`surgery`) and fine-tuning
(`iterative.prune_train_repeat`), which it configures with a `PruningSchedule`.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable

import pandas as pd
import torch
import torch.nn as nn

from . import distributed
from .graph.groups import channel_groups
from .recover.iterative import PruningSchedule, prune_train_repeat
from .measure.counting import count_flops

__all__ = ["prune"]


def _check_prunable(model: nn.Module) -> None:
    """Trace the model (a clear refusal naming the line if it cannot be traced) and need one prunable group."""
    groups = channel_groups(model)
    if not any(not g.refused for g in groups.values()):
        reasons = sorted({f"{g.name}: {g.refused}" for g in groups.values() if g.refused})
        raise ValueError("no conv of this model can be pruned exactly: " + "; ".join(reasons[:5] or ["it has no convs"]))


def prune(
    model: nn.Module,
    example_inputs: torch.Tensor,
    train_data: Iterable,
    val_data: Iterable,
    *,
    criterion: str = "taylor",
    flops_reduction: float | None = None,
    speedup: float | None = None,
    params_reduction: float | None = None,
    fraction: float | None = None,
    min_metric: float | None = None,
    loss_fn: Callable | None = None,
    metric: Callable[[nn.Module, Iterable], float] | None = None,
    optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer] | None = None,
    fraction_per_iteration: float = 0.1,
    finetune_steps: int = 100,
    lr: float = 1e-4,
    multiple_of: int = 1,
    max_fraction: float | None = 0.9,
    checkpoint: str | os.PathLike | None = None,
    runtime: str = "deploy",
    num_threads: int = 1,
    seed: int = 0,
    progress: bool = True,
) -> tuple[nn.Module, pd.DataFrame]:
    """Prune whole filters from a copy of `model` (left unchanged) until a target, fine-tuning after every cut.

    Args:
        model: a trained network that ``torch.fx`` can trace (VGG, ResNets, MobileNets, your own).
        example_inputs: one batch of inputs, (N, C, H, W): the shape FLOPs are counted at.
        train_data: batches of ``(inputs, targets)`` (a DataLoader): ranking and fine-tuning.
        val_data: batches of ``(inputs, targets)``: the metric after every iteration.
        criterion: a name of `rank.criteria.CRITERIA` ("taylor", the paper's; "l1", ...).
        flops_reduction: stop once the model needs this many times fewer FLOPs (2.0: half of them) ...
        speedup: ... and/or once it runs this many times faster, measured end to end on this machine (in
            `runtime`, a batch of ``example_inputs``' size, `num_threads` threads) ...
        params_reduction: ... and/or once it has this many times fewer parameters: ``speedup=3,
            params_reduction=4`` asks for the post's "3x faster and 4x smaller" in one call.  With `speedup` or
            `params_reduction`, every cut is planned for all the targets given at once (`flops_reduction` too):
            one width per layer, at the least importance, from a latency model of the network's blocks measured
            here and exact counts (`cost.budgets`); the time saved is checked end to end before each cut ...
        fraction: ... or once this fraction of all filters is removed ...
        min_metric: ... and never return a model whose metric fell below this (the last one above it); a
            fraction in [0, 1], as accuracy is (scale a metric of your own to it).
        loss_fn: ``loss_fn(outputs, targets)``, a batch mean; cross-entropy by default.
        metric: ``metric(model, val_data) -> float``, higher = better; top-1 accuracy by default.
        optimizer: ``optimizer(parameters) -> torch.optim.Optimizer`` for each fine-tune; Adam(lr) by default.
        fraction_per_iteration: share of the filters left removed per iteration (not too much at once).
        finetune_steps: optimisation steps after each cut.
        multiple_of: keep every pruned layer's width a multiple of this (8 or 16 suit CPU vector units).
        max_fraction: no layer loses more than this share of its filters (None: no cap).
        checkpoint: a file: written after every iteration, and the run resumes from it when it exists.
        runtime: where `speedup` is measured: ``"deploy"`` (PyTorch, BatchNorm folded, channels-last), another
            PyTorch form of `measure.FORMS`, or a registered runtime (``"onnxruntime"``, ``"openvino"``).
        num_threads: threads while timing, as the network will run.

    Launched by ``torchrun --nproc_per_node=N`` it runs unchanged on N processes (`distributed`): each rank trains
    and ranks on its share of the data (the DataLoaders' batch_size is per process) and all return the same model.

    Returns:
        ``(pruned model in eval mode, history)``; one history row per iteration (`iterative.HISTORY_COLUMNS`;
        the accuracy columns hold the metric).

    Raises:
        NotImplementedError: the model cannot be traced (the message names the line of its code).
        ValueError: no target, or no conv that can be pruned exactly (the reasons are named).
    """
    if flops_reduction is None and speedup is None and params_reduction is None and fraction is None \
            and min_metric is None:
        raise ValueError("give a target: flops_reduction (e.g. 2.0), speedup (e.g. 2.0), params_reduction (e.g. 4.0), "
                         "fraction (of filters, e.g. 0.5) or min_metric")
    if flops_reduction is not None and not flops_reduction > 1:
        raise ValueError(f"flops_reduction is how many times fewer FLOPs to reach, > 1; got {flops_reduction}")
    if not isinstance(example_inputs, torch.Tensor) or example_inputs.dim() < 2:
        raise TypeError("example_inputs must be one batch of inputs as a tensor, e.g. torch.randn(1, 3, 224, 224)")
    distributed.join_from_environment()      # under torchrun: every process joins, and each prunes its share
    _check_prunable(model)
    input_shape = tuple(example_inputs.shape[1:])
    target_gflops = (count_flops(model, (1, *input_shape)) / 1e9 / flops_reduction if flops_reduction else None)
    schedule = PruningSchedule(criterion=criterion, fraction_per_iteration=fraction_per_iteration,
                               finetune_steps=finetune_steps, lr=lr, target_fraction=fraction,
                               target_gflops=target_gflops, target_speedup=speedup,
                               target_params_reduction=params_reduction, min_accuracy=min_metric,
                               multiple_of=multiple_of, max_fraction=max_fraction, seed=seed,
                               latency_batch=int(example_inputs.shape[0]), latency_form=runtime,
                               latency_threads=num_threads)
    return prune_train_repeat(model, train_data, val_data, schedule, input_shape=input_shape, checkpoint=checkpoint,
                              progress=progress, loss_fn=loss_fn, metric=metric, optimizer=optimizer)
