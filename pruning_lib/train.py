"""Training, evaluation and checkpoints: the "Train" in Prune-Train-Repeat.

The loop knows nothing about widgets or plots: it returns a history ``DataFrame`` and reports
through callbacks (:class:`Callback`, :class:`FunctionCallback` or plain functions), which may
stop it early. Checkpoints hold only plain types, so ``torch.load(path, weights_only=True)``
reads them.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

__all__ = [
    "HISTORY_COLUMNS",
    "Callback",
    "FunctionCallback",
    "KnowledgeDistillation",
    "StopTraining",
    "confusion_matrix",
    "evaluate",
    "fit",
    "load_checkpoint",
    "pick_device",
    "predict",
    "save_checkpoint",
    "seed_everything",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Columns of the history returned by :func:`fit`, one row per evaluation point.
HISTORY_COLUMNS = ("step", "epoch", "train_loss", "val_loss", "val_accuracy", "elapsed_s")

CHECKPOINT_FORMAT = "pruning_lib.checkpoint/1"


# --------------------------------------------------------------------------- devices and seeds


def pick_device(prefer: str | torch.device | None = None) -> torch.device:
    """Return ``prefer`` if given (checked to be available), else cuda, then mps, then cpu."""
    if prefer is not None:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {prefer!r} requested but CUDA is not available; use 'cpu'")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device {prefer!r} requested but MPS is not available; use 'cpu'")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's ``random``, NumPy and torch (all devices).

    Returns a fresh CPU ``torch.Generator`` seeded with ``seed``, handy for
    ``DataLoader(..., shuffle=True, generator=g)`` so the batch order is reproducible too.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- small helpers


@contextmanager
def _mode(model: nn.Module, training: bool) -> Iterator[None]:
    """Put ``model`` in train/eval mode, then restore every submodule's previous mode."""
    before = {m: m.training for m in model.modules()}
    model.train(training)
    try:
        yield
    finally:
        for m, was_training in before.items():
            m.training = was_training


def _model_device(model: nn.Module) -> torch.device:
    param = next(itertools.chain(model.parameters(), model.buffers()), None)
    return param.device if param is not None else torch.device("cpu")


def _resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """``device`` if given (the model is moved there), else where the model already lives."""
    if device is None:
        return _model_device(model)
    device = torch.device(device)
    model.to(device)
    return device


def _unpack(batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a loader batch into ``(inputs (N, C, H, W), targets (N,))`` on ``device``."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(
            f"loader must yield (inputs, targets) pairs; got {type(batch).__name__}"
            + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        )
    x, y = batch
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def _len_or_none(loader: Iterable) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


# --------------------------------------------------------------------------- evaluation


def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    device: str | torch.device | None = None,
    loss_fn: LossFn = F.cross_entropy,
    progress: bool = False,
) -> dict[str, float | int]:
    """Mean loss and top-1 accuracy of ``model`` over ``loader``.

    Runs in eval mode under ``torch.no_grad`` and restores each module's previous mode.
    ``loss_fn(logits (N, K), targets (N,))`` must return the batch mean (as ``F.cross_entropy``);
    a loss with ``uses_inputs = True`` (:class:`KnowledgeDistillation`) also gets ``inputs=x``.

    Returns:
        ``{"loss": mean loss per example, "accuracy": fraction correct in [0, 1], "n": examples}``.
    """
    device = _resolve_device(model, device)
    total_loss, correct, n = 0.0, 0, 0
    with _mode(model, training=False), torch.no_grad():
        for batch in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
            x, y = _unpack(batch, device)
            logits = model(x)
            total_loss += _batch_loss(loss_fn, logits, y, x).item() * len(y)
            correct += (logits.argmax(dim=1) == y).sum().item()
            n += len(y)
    if n == 0:
        raise ValueError("evaluate got an empty loader; check the dataset and batch size")
    return {"loss": total_loss / n, "accuracy": correct / n, "n": n}


def predict(
    model: nn.Module, loader: Iterable, *, device: str | torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted classes (argmax of logits) and true targets, both ``(N,)`` int64 on the CPU."""
    device = _resolve_device(model, device)
    preds, targets = [], []
    with _mode(model, training=False), torch.no_grad():
        for batch in loader:
            x, y = _unpack(batch, device)
            preds.append(model(x).argmax(dim=1).cpu())
            targets.append(y.cpu())
    if not preds:
        raise ValueError("predict got an empty loader; check the dataset and batch size")
    return torch.cat(preds).long(), torch.cat(targets).long()


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts ``(num_classes, num_classes)`` int64: entry ``[i, j]`` = examples of true class i
    predicted as j (rows = true class, columns = prediction)."""
    preds, targets = torch.as_tensor(preds).long().flatten(), torch.as_tensor(targets).long().flatten()
    if preds.shape != targets.shape:
        raise ValueError(
            f"preds has {preds.numel()} entries but targets has {targets.numel()}; they must match"
        )
    for name, t in (("preds", preds), ("targets", targets)):
        if t.numel() and (t.min() < 0 or t.max() >= num_classes):
            raise ValueError(
                f"{name} has class {int(t.max() if t.max() >= num_classes else t.min())} "
                f"outside [0, {num_classes}); pass the right num_classes"
            )
    counts = torch.bincount(targets * num_classes + preds, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


# --------------------------------------------------------------------------- losses


class KnowledgeDistillation:
    """Distillation loss (Hinton et al. 2015): learn the labels *and* a teacher's soft predictions.

    ``loss = (1 - alpha) * CE(s, y) + alpha * T**2 * KL(softmax(t / T) || softmax(s / T))``

    with ``s`` the student's logits (N, K), ``t = teacher(x)`` computed in eval mode without
    gradients, and ``T`` the temperature (the ``T**2`` keeps the soft term's gradients on the scale
    of the hard term's).  After pruning, the teacher is the dense network: its soft predictions tell
    the pruned student how confusable each image is, which 3,200 hard labels cannot.

    Use it as ``fit(..., loss_fn=KnowledgeDistillation(dense, alpha=0.7))``; the teacher is not
    changed (its modes are restored and it gets no gradients).
    """

    uses_inputs = True   # fit and evaluate pass the batch's inputs: loss_fn(logits, y, inputs=x)

    def __init__(self, teacher: nn.Module, alpha: float = 0.7, temperature: float = 4.0) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha weighs the teacher's term and must be in [0, 1]; got {alpha}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        self.teacher, self.alpha, self.temperature = teacher, alpha, temperature

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor, *, inputs: torch.Tensor) -> torch.Tensor:
        with _mode(self.teacher, training=False), torch.no_grad():
            soft_targets = F.softmax(self.teacher(inputs) / self.temperature, dim=1)
        soft = F.kl_div(F.log_softmax(logits / self.temperature, dim=1), soft_targets, reduction="batchmean")
        hard = F.cross_entropy(logits, targets)
        return (1 - self.alpha) * hard + self.alpha * self.temperature**2 * soft


def _batch_loss(loss_fn: LossFn, logits: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``loss_fn(logits, targets)``, or with ``inputs=`` for a loss that needs them (distillation)."""
    if getattr(loss_fn, "uses_inputs", False):
        return loss_fn(logits, targets, inputs=inputs)
    return loss_fn(logits, targets)


# --------------------------------------------------------------------------- callbacks


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


def _as_callback(cb: Callback | Callable) -> Callback:
    """Callbacks pass through; a plain function ``f(record, model)`` runs at each evaluation point."""
    if isinstance(cb, Callback):
        return cb
    if callable(cb):
        return FunctionCallback(on_eval=cb)
    raise TypeError(f"callback {cb!r} is neither a Callback nor a function f(record, model)")


def _notify(callbacks: Sequence[Callback], hook: str, *args: Any) -> bool:
    """Call ``hook`` on every callback; True if any asked to stop."""
    stop = False
    for cb in callbacks:
        try:
            stop |= getattr(cb, hook)(*args) is True
        except StopTraining:
            stop = True
    return stop


# --------------------------------------------------------------------------- training


def _default_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(
            "model has no parameter with requires_grad=True; "
            "unfreeze some, e.g. freeze_features(model, frozen=False)"
        )
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def _batches(loader: Iterable, epochs: int | None) -> Iterator[tuple[int, Any]]:
    """Yield ``(pass index, batch)`` for ``epochs`` passes, or forever when ``epochs`` is None."""
    for e in range(epochs) if epochs is not None else itertools.count():
        empty = True
        for batch in loader:
            empty = False
            yield e, batch
        if empty:
            raise ValueError("train_loader yielded no batches; check the dataset and batch size")


def _train_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer, loss_fn: LossFn
) -> float:
    """One optimisation step on a batch; returns the batch's mean loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = _batch_loss(loss_fn, model(x), y, x)
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
    device = _resolve_device(model, device)
    optimizer = optimizer or _default_optimizer(model, lr, weight_decay)
    callbacks = [_as_callback(cb) for cb in callbacks]
    per_epoch = _len_or_none(train_loader)
    eval_every = eval_every or per_epoch
    total = steps if steps is not None else (epochs * per_epoch if per_epoch else None)
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
        with _mode(model, training=True):
            for passes, batch in batches:
                x, y = _unpack(batch, device)
                loss = _train_step(model, x, y, optimizer, loss_fn)
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"training loss is {loss} at step {step + 1}; lower lr or check the inputs"
                    )
                step, running, since_eval = step + 1, running + loss, since_eval + 1
                bar.update(1)
                bar.set_postfix(loss=f"{running / since_eval:.4f}", refresh=False)
                stopped = _notify(callbacks, "on_step", step, loss, model)
                if not stopped and eval_every and (step - start_step) % eval_every == 0:
                    stopped = _notify(callbacks, "on_epoch", dict(record(step)), model)
                if stopped:
                    break
            if since_eval:  # the last, partial interval (or the one a callback cut short)
                _notify(callbacks, "on_epoch", dict(record(step)), model)
    finally:
        bar.close()
    result = pd.DataFrame(history, columns=list(HISTORY_COLUMNS))
    result.attrs["stopped_early"] = stopped
    return result


# --------------------------------------------------------------------------- checkpoints


_PLAIN = (type(None), bool, int, float, str, torch.Tensor)


def _check_plain(obj: Any, where: str) -> None:
    """Raise TypeError if ``obj`` holds anything ``torch.load(weights_only=True)`` refuses."""
    if isinstance(obj, _PLAIN):
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where} has key {k!r} of type {type(k).__name__}; use str keys")
            _check_plain(v, f"{where}[{k!r}]")
    else:
        raise TypeError(
            f"{where} is a {type(obj).__name__}; checkpoints hold only plain types "
            "(None, bool, int, float, str, tensors, lists, dicts). Convert it (e.g. float(x), x.tolist())"
        )


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    history: pd.DataFrame | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Save model (and optimizer) state, history and ``meta`` atomically; returns the path.

    Only plain types are stored (history as ``DataFrame.to_dict(orient="list")``), so
    ``torch.load(path, weights_only=True)`` reads the file. The data goes to a temporary file
    in the same folder, then ``os.replace`` renames it: an interrupted save never leaves a
    broken checkpoint at ``path``.
    """
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "history": history.to_dict(orient="list") if history is not None else None,
        "meta": dict(meta) if meta is not None else {},
    }
    _check_plain(payload["history"], "history")
    _check_plain(payload["meta"], "meta")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def state_dict_differences(model: nn.Module, state: dict[str, torch.Tensor], source: str = "file") -> list[str]:
    """How ``state`` differs from ``model.state_dict()``: missing keys, unexpected keys, shape mismatches
    (at most 8 of each named); an empty list when they match."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: {source} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    parts = [
        f"missing keys {missing[:8]}" if missing else "",
        f"unexpected keys {unexpected[:8]}" if unexpected else "",
        f"shape mismatches {shapes[:8]}" if shapes else "",
    ]
    return [p for p in parts if p]


def _check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Raise ValueError naming the keys and shapes where ``state`` and ``model`` differ."""
    differences = state_dict_differences(model, state, "checkpoint")
    if differences:
        raise ValueError(
            f"checkpoint {path} does not match {type(model).__name__}: "
            + "; ".join(differences)
            + ". Fix: build the model with the same architecture before loading (a pruned model "
            "has fewer filters: rebuild it with the pruned widths)."
        )


def load_checkpoint(
    path: str | Path, model: nn.Module, *, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Load a :func:`save_checkpoint` file into ``model`` (and ``optimizer``) in place.

    Reads with ``torch.load(weights_only=True)`` onto the CPU; tensors are copied to wherever
    the model's parameters live.

    Returns:
        ``{"history": DataFrame or None, "meta": dict}``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path.resolve()}. Fix: check the path (working directory is "
            f"{Path.cwd()}) or create it with save_checkpoint(path, model)."
        )
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not a pruning_lib checkpoint (no format {CHECKPOINT_FORMAT!r}); "
            "for a bare state dict use model.load_state_dict(torch.load(path, weights_only=True))"
        )
    _check_state_dict(model, payload["model"], path)
    model.load_state_dict(payload["model"])
    if optimizer is not None:
        if payload["optimizer"] is None:
            raise ValueError(
                f"checkpoint {path} has no optimizer state; pass optimizer=None, "
                "or save with save_checkpoint(..., optimizer=opt)"
            )
        try:
            optimizer.load_state_dict(payload["optimizer"])
        except ValueError as err:
            raise ValueError(
                f"optimizer state in {path} does not fit this optimizer ({err}); build the "
                "optimizer over the same parameters, in the same order, as when saving"
            ) from err
    history = payload["history"]
    return {
        "history": pd.DataFrame(history) if history is not None else None,
        "meta": payload["meta"],
    }
