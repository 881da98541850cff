"""Training: the "Train" in Prune–Train–Repeat.

`fit` trains for a number of steps (or epochs) and returns a history ``DataFrame``; it knows nothing
about widgets or plots and reports through callbacks (`Callback`, `FunctionCallback` or plain
functions), which may stop it early.  Evaluation lives in `evaluation`, losses in `distill`,
checkpoints in `checkpoints`.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .distill import LossFn, batch_loss
from .evaluation import evaluate, unpack_batch
from ..runtime import autocast_dtype, call, mode, resolve_device

__all__ = ["HISTORY_COLUMNS", "Callback", "FunctionCallback", "Plateau", "StopTraining", "fit", "notify"]

#: Columns of the history returned by :func:`fit`, one row per evaluation point.
HISTORY_COLUMNS = ("step", "epoch", "train_loss", "val_loss", "val_accuracy", "elapsed_s")


class StopTraining(Exception):
    """Raise from a callback to stop :func:`fit` cleanly; it returns the history so far."""


class Callback:
    """Hooks called by :func:`fit`. Return ``True`` (or raise :class:`StopTraining`) to stop."""

    def on_step(self, step: int, loss: float, model: nn.Module) -> bool | None:
        """After each optimisation step; ``loss`` is that batch's mean training loss."""
        return None

    def on_epoch(self, record: dict[str, float], model: nn.Module) -> bool | None:
        """At each evaluation point, with the history row just recorded (see HISTORY_COLUMNS)."""
        return None


class FunctionCallback(Callback):
    """Wrap plain functions: ``on_step(step, loss, model)`` and ``on_eval(record, model)``."""

    def __init__(
        self,
        on_step: Callable[[int, float, nn.Module], bool | None] | None = None,
        on_eval: Callable[[dict[str, float], nn.Module], bool | None] | None = None,
    ) -> None:
        self._on_step, self._on_eval = on_step, on_eval

    def on_step(self, step: int, loss: float, model: nn.Module) -> bool | None:
        return self._on_step(step, loss, model) if self._on_step else None

    def on_epoch(self, record: dict[str, float], model: nn.Module) -> bool | None:
        return self._on_eval(record, model) if self._on_eval else None


class Plateau(Callback):
    """Stop when validation accuracy has not improved for `patience` evaluations; remember the best weights."""

    def __init__(self, patience: int, min_delta: float = 0.0):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.best_state, self.waited = -math.inf, None, 0

    def on_epoch(self, record: dict, model: nn.Module) -> bool:
        if record["val_accuracy"] > self.best + self.min_delta:
            self.best, self.waited = record["val_accuracy"], 0
            self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.waited += 1
        return self.waited >= self.patience


def _as_callback(cb: Callback | Callable) -> Callback:
    """Callbacks pass through; a plain function ``f(record, model)`` runs at each evaluation point."""
    if isinstance(cb, Callback):
        return cb
    if callable(cb):
        return FunctionCallback(on_eval=cb)
    raise TypeError(f"callback {cb!r} is neither a Callback nor a function f(record, model)")


def notify(callbacks: Sequence[Callback], hook: str, *args: Any) -> bool:
    """Call ``hook`` on every callback that has it; True if any asked to stop.

    A callback asks to stop by returning True or by raising `StopTraining`; every callback is
    called, also after one has asked.
    """
    stop = False
    for cb in callbacks:
        if not hasattr(cb, hook):
            continue
        try:
            result = getattr(cb, hook)(*args)
            stop |= result is True or result is np.True_
        except StopTraining:
            stop = True
    return stop


def _default_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(
            "model has no parameter with requires_grad=True; "
            "unfreeze some, e.g. freeze_features(model, frozen=False)"
        )
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def _len_or_none(loader: Iterable) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def _batches(loader: Iterable, epochs: int | None) -> Iterator[tuple[int, Any]]:
    """Yield ``(pass index, batch)`` for ``epochs`` passes, or forever when ``epochs`` is None.  A sampler with
    ``set_epoch`` (`DistributedSampler`) is moved on by one epoch before every pass after the first, so each pass
    is shuffled anew."""
    sampler = getattr(loader, "sampler", None)
    for e in range(epochs) if epochs is not None else itertools.count():
        if e and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(sampler.epoch + 1)
        empty = True
        for batch in loader:
            empty = False
            yield e, batch
        if empty:
            raise ValueError("train_loader yielded no batches; check the dataset and batch size")


def _check_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """The optimizer must hold exactly the model's trainable parameters: after pruning, the old tensors are gone."""
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in held]
    foreign = [p for group in optimizer.param_groups for p in group["params"] if id(p) not in names]
    if foreign:
        raise ValueError(f"the optimizer holds {len(foreign)} tensors that are not parameters of the model (e.g. "
                         f"of shape {tuple(foreign[0].shape)}): it was built before the model was pruned or replaced. "
                         "Build the optimizer after pruning, from model.parameters()")
    if missing:
        raise ValueError(f"the optimizer does not hold {len(missing)} trainable parameters of the model ({missing[:4]}): "
                         "they would never update. Build the optimizer after pruning, from model.parameters() (or set "
                         "requires_grad=False on the parameters you do not want to train)")


def _lr_scheduler(optimizer: torch.optim.Optimizer, name: str, total: int | None):
    """None for a constant learning rate, else the scheduler `fit` steps after every optimisation step."""
    if name == "constant":
        return None
    if name != "cosine":
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine'; got {name!r}")
    if total is None:
        raise ValueError("lr_schedule='cosine' needs a known length: give steps, or a loader with a length")
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)


def _train_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer, loss_fn: LossFn,
    dtype: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None,
) -> float:
    """One optimisation step on a batch (in `dtype` under autocast when given); returns the batch's mean loss."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(y.device.type, dtype=dtype, enabled=dtype is not None):
        loss = batch_loss(loss_fn, call(model, x), y, x)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.item()


def fit(
    model: nn.Module,
    train_loader: Iterable,
    *,
    steps: int | None = None,
    epochs: int | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    val_loader: Iterable | None = None,
    eval_every: int | None = None,
    callbacks: Iterable[Callback | Callable] = (),
    device: str | torch.device | None = None,
    progress: bool = True,
    loss_fn: LossFn = F.cross_entropy,
    start_step: int = 0,
    lr_schedule: str = "constant",
    mixed_precision: str = "auto",
) -> pd.DataFrame:
    """Train ``model`` for ``steps`` optimisation steps (cycling the loader) or ``epochs`` passes.

    Args:
        steps / epochs: how long to train in this call; give exactly one.
        optimizer: defaults to Adam(lr, weight_decay) over parameters with ``requires_grad``.
            Build a new one after pruning: an old optimizer points at the removed tensors.
        val_loader: if given, :func:`evaluate` runs at each evaluation point.
        eval_every: steps between evaluation points; default once per epoch (when the loader has
            a length). There is always one at the end.
        callbacks: :class:`Callback` objects or functions ``f(record, model)`` (run at each
            evaluation point). Returning True or raising :class:`StopTraining` stops training.
        device: move the model there; default: where its parameters are.
        progress: show a ``tqdm.auto`` bar with the running loss.
        start_step: step count already done (to continue a history); steps are numbered from it.
        loss_fn: ``F.cross_entropy`` by default; :class:`KnowledgeDistillation` learns from a teacher too.
        lr_schedule: ``"constant"``, or ``"cosine"``: the learning rate falls from its start to 0 over the
            steps of this call (cosine annealing), so training ends at a settled point, not mid-stride.
        mixed_precision: ``"auto"`` trains in bfloat16 (or float16 with a gradient scaler) on a CUDA GPU, with
            the model and the batches in channels-last layout; float32 on CPU and MPS (`runtime.autocast_dtype`).

    Returns:
        History, one row per evaluation point, columns ``HISTORY_COLUMNS``: ``step`` (total steps
        done), ``epoch`` (passes over the loader, fractional;
        the 1-based pass in progress if the loader has no length), ``train_loss`` (mean since the last
        row), ``val_loss`` / ``val_accuracy`` (NaN without val_loader), ``elapsed_s`` (seconds
        since the call started). ``history.attrs["stopped_early"]`` tells if a callback stopped it.
        The model's train/eval modes are restored at the end.
    """
    if (steps is None) == (epochs is None):
        raise ValueError(f"give exactly one of steps or epochs; got steps={steps}, epochs={epochs}")
    for name, value in (("steps", steps), ("epochs", epochs), ("eval_every", eval_every)):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    device = resolve_device(model, device)
    if optimizer is not None:
        _check_optimizer(model, optimizer)
    optimizer = optimizer or _default_optimizer(model, lr, weight_decay)
    callbacks = [_as_callback(cb) for cb in callbacks]
    per_epoch = _len_or_none(train_loader)
    eval_every = eval_every or per_epoch
    total = steps if steps is not None else (epochs * per_epoch if per_epoch else None)
    scheduler = _lr_scheduler(optimizer, lr_schedule, total)
    dtype = autocast_dtype(device, mixed_precision)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    if device.type == "cuda" and mixed_precision != "off":
        model.to(memory_format=torch.channels_last)        # tensor cores want NHWC
    batches = _batches(train_loader, epochs)
    if steps is not None:
        batches = itertools.islice(batches, steps)

    history: list[dict[str, float]] = []
    start = time.perf_counter()
    running, since_eval, passes, stopped = 0.0, 0, 0, False

    def record(step: int) -> dict[str, float]:
        """Close the interval since the last row: evaluate and append a history row."""
        nonlocal running, since_eval
        val = {}
        if val_loader is not None:
            val = evaluate(model, val_loader, device=device, loss_fn=loss_fn)
        row = {
            "step": step,
            "epoch": step / per_epoch if per_epoch else float(passes + 1),
            "train_loss": running / since_eval,
            "val_loss": val.get("loss", math.nan),
            "val_accuracy": val.get("accuracy", math.nan),
            "elapsed_s": time.perf_counter() - start,
        }
        history.append(row)
        running, since_eval = 0.0, 0
        return row

    step = start_step
    bar = tqdm(total=total, desc="fit", unit="step", disable=not progress)
    try:
        with mode(model, training=True):
            for passes, batch in batches:
                x, y = unpack_batch(batch, device)
                if device.type == "cuda" and mixed_precision != "off" and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                loss = _train_step(model, x, y, optimizer, loss_fn, dtype, scaler)
                if scheduler is not None:
                    scheduler.step()
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"training loss is {loss} at step {step + 1}; lower lr or check the inputs"
                    )
                step, running, since_eval = step + 1, running + loss, since_eval + 1
                bar.update(1)
                bar.set_postfix(loss=f"{running / since_eval:.4f}", refresh=False)
                stopped = notify(callbacks, "on_step", step, loss, model)
                if not stopped and eval_every and (step - start_step) % eval_every == 0:
                    stopped = notify(callbacks, "on_epoch", dict(record(step)), model)
                if stopped:
                    break
            if since_eval:  # the last, partial interval (or the one a callback cut short)
                notify(callbacks, "on_epoch", dict(record(step)), model)
    finally:
        bar.close()
    result = pd.DataFrame(history, columns=list(HISTORY_COLUMNS))
    result.attrs["stopped_early"] = stopped
    return result
