"""The face of the library: `prune` your own trained model with Prune–Train–Repeat, in one call.

    import pruning_lib
    pruned, history = pruning_lib.prune(model, example_inputs, train_loader, val_loader,
                                        speedup=3.0, params_reduction=4.0, checkpoint="prune.pt")

Everything it does is the method of the rest of the library: channel groups from the model's data flow
(`graph`), Taylor scores (`rank`), a plan (`plan`, `cost.budgets`), exact surgery (`surgery`) and fine-tuning
(`recover.iterative.prune_train_repeat`), which it configures with a `PruningSchedule`.  Its arguments are checked
first, in the caller's words (`arguments`).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Sequence

import pandas as pd
import torch
import torch.nn as nn

from . import arguments, distributed
from .graph.groups import trace_groups
from .measure.counting import count_flops
from .recover.iterative import PruningSchedule, prune_train_repeat
from .runtime import first_examples, random_state

__all__ = ["prune"]


def _check_prunable(groups, kept: Sequence[str]) -> None:
    """One prunable group at least (the refusals are named)."""
    if not any(not g.refused and g.name not in kept for g in groups.values()):
        reasons = sorted({f"{g.name}: {g.refused}" for g in groups.values() if g.refused})
        why = "; ".join(reasons[:5] or ["it has no convs"]) + ("" if not kept else "; the others are excluded")
        raise ValueError("no layer of this model can be pruned exactly: " + why)


def prune(
    model: nn.Module,
    example_inputs: Any,
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
    lr: float | None = None,
    fraction_per_iteration: float = 0.1,
    finetune_steps: int = 100,
    multiple_of: int = 1,
    max_fraction: float | None = 0.9,
    exclude: Sequence[str | nn.Module] | None = None,
    checkpoint: str | os.PathLike | None = None,
    restart: bool = False,
    runtime: str | None = None,
    num_threads: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> tuple[nn.Module, pd.DataFrame]:
    """Prune whole filters (and a Linear's hidden units) from a copy of `model` (left unchanged) until a target,
    fine-tuning after every cut.

    Args:
        model: a trained network that ``torch.fx`` can trace (VGG, ResNets, MobileNets, your own).
        example_inputs: one batch of inputs: a tensor ``(N, C, H, W)`` (FLOPs are counted per example, and `speedup`
            is timed at this batch size), or a tuple or dict of tensors for a model with several inputs.  It is run
            through the model once before anything else.
        train_data: batches of ``(inputs, targets)`` (a DataLoader, a list): ranking and fine-tuning.
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
        fraction: ... or once this fraction of all prunable channels is removed ...
        min_metric: ... and never return a model whose metric fell below this (the last one above it), on the
            metric's own scale (accuracy: a fraction; a negative MSE works too).
        loss_fn: ``loss_fn(outputs, targets)``, a batch mean; cross-entropy by default.
        metric: ``metric(model, val_data) -> float``, higher = better; top-1 accuracy by default.
        optimizer: ``optimizer(parameters) -> torch.optim.Optimizer`` for each fine-tune; Adam(`lr`) by default ...
        lr: ... the default optimizer's learning rate (1e-4); refused beside `optimizer`, which sets its own.
        fraction_per_iteration: share of what is left removed per iteration (not too much at once).
        finetune_steps: optimisation steps after each cut.
        multiple_of: keep every pruned layer's width a multiple of this (8 or 16 suit CPU vector units).
        max_fraction: no layer loses more than this share of its channels (None: no cap).
        exclude: modules (names or the modules themselves) kept whole: no group they belong to loses a channel.
        checkpoint: a file: written after every iteration, and the run resumes from it when it exists ...
        restart: ... unless it holds another run (another model or settings): then True starts afresh over it.
        runtime: where `speedup` is measured: ``"deploy"`` by default (PyTorch, BatchNorm folded, channels-last),
            another PyTorch form of `measure.FORMS`, or a registered runtime (``"onnxruntime"``, ``"openvino"``).
        num_threads: threads while timing `speedup`, as the network will run (1 by default).
        seed: seeds every iteration's batches and dropout; the caller's random state is restored afterwards.

    Launched by ``torchrun --nproc_per_node=N`` it runs unchanged on N processes (`distributed`): each rank trains
    and ranks on its share of the data (the DataLoaders' batch_size is per process) and all return the same model;
    a process group it created is destroyed before it returns.

    Returns:
        ``(pruned model in eval mode, history)``; one history row per iteration (`iterative.HISTORY_COLUMNS`;
        the accuracy columns hold the metric).

    Raises:
        TypeError, ValueError: an argument is wrong; the message names it as written and says what to pass.
        NotImplementedError: the model cannot be traced (the message names the line of its code).
    """
    arguments.check_model(model)
    arguments.check_targets(flops_reduction=flops_reduction, speedup=speedup, params_reduction=params_reduction,
                            fraction=fraction, min_metric=min_metric)
    arguments.check_options(criterion=criterion, loss_fn=loss_fn, metric=metric, optimizer=optimizer, lr=lr,
                            fraction_per_iteration=fraction_per_iteration, finetune_steps=finetune_steps,
                            multiple_of=multiple_of, max_fraction=max_fraction, checkpoint=checkpoint, restart=restart,
                            runtime=runtime, num_threads=num_threads, seed=seed, speedup=speedup, model=model,
                            example_inputs=example_inputs)
    generators = [getattr(d, "generator", None) for d in (train_data, val_data)]
    with random_state(*generators):          # checking runs the model and counting draws inputs: all put back
        traced = trace_groups(model)                           # a model fx cannot trace is named here, by its line
        arguments.check_example_inputs(model, example_inputs, traced.graph)
        arguments.check_data("train_data", train_data)
        arguments.check_data("val_data", val_data)
        kept = arguments.kept_whole(model, exclude, traced.groups)
        _check_prunable(traced.groups, kept)
        one = isinstance(example_inputs, torch.Tensor)
        example = (1, *example_inputs.shape[1:]) if one else first_examples(example_inputs, 1)
        target_gflops = count_flops(model, example) / 1e9 / flops_reduction if flops_reduction else None
        schedule = PruningSchedule(criterion=criterion, fraction_per_iteration=fraction_per_iteration,
                                   finetune_steps=finetune_steps, lr=1e-4 if lr is None else lr,
                                   target_fraction=fraction,
                                   target_gflops=target_gflops, target_speedup=speedup,
                                   target_params_reduction=params_reduction, min_accuracy=min_metric,
                                   multiple_of=multiple_of, max_fraction=max_fraction, seed=seed,
                                   latency_batch=int(example_inputs.shape[0]) if one else 1,
                                   latency_form=runtime or "deploy", latency_threads=num_threads or 1, keep_whole=kept)
        destroy = arguments.creates_process_group()
        try:
            distributed.join_from_environment()      # under torchrun: every process joins, and each prunes its share
            return prune_train_repeat(model, train_data, val_data, schedule,
                                      input_shape=tuple(example_inputs.shape[1:]) if one else None,
                                      example_inputs=None if one else example_inputs, checkpoint=checkpoint,
                                      restart_stale=restart, restart_argument="restart", progress=progress,
                                      loss_fn=loss_fn, metric=metric, optimizer=optimizer)
        finally:
            destroy()
