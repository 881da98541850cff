"""Checkpoints: one atomic writer and one file format for every model the course saves.

A checkpoint holds only plain data (tensors, numbers, strings, lists, dicts), so
``torch.load(path, weights_only=True)`` reads it and no code is ever unpickled:

    {"format": "pruning_lib.checkpoint/2", "state_dict": ...,
     "optimizer": state or None, "history": {column: values} or None, "meta": {...}}

- `save_checkpoint` / `load_checkpoint`: a model of a known architecture (the baseline).
- `save_pruned`: a pruned model; its tensors' shapes let `surgery.load_pruned` rebuild its architecture from a
  freshly built unpruned model (older files also hold a ``widths`` map, no longer needed).
- `atomic_write`: every file the library writes (checkpoints and JSON reports) goes to a hidden
  temporary file in the same folder, is flushed to disk (fsync) and then renamed over the target,
  so an interrupted write never leaves a broken file.  Files are readable by others (mode 0644).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

__all__ = [
    "FORMAT",
    "CheckpointError",
    "atomic_write",
    "check_plain",
    "fingerprint",
    "load_checkpoint",
    "load_state",
    "plain_value",
    "read_checkpoint",
    "save_checkpoint",
    "save_pruned",
    "state_dict_differences",
]

FORMAT = "pruning_lib.checkpoint/2"
_OLD_FORMATS = ("pruning_lib.checkpoint/1", "pruning_lib.pruned/1")   # still read
_PLAIN = (type(None), bool, int, float, str, torch.Tensor)


class CheckpointError(ValueError):
    """A file is not a readable pruning_lib checkpoint (missing, truncated, foreign, inconsistent)."""


# --------------------------------------------------------------------------- writing


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` on a hidden temporary file next to `path`, fsync it, then rename it to `path`.

    Temporary files left by an earlier, killed write (``.<name>.*.tmp``) are removed first.
    The result has mode 0644 (``torch.save`` alone would give the same; ``mkstemp`` gives 0600).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name such as {path / 'model.pt'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_plain(obj: Any, where: str) -> None:
    """Raise TypeError if `obj` holds anything ``torch.load(weights_only=True)`` refuses to read."""
    if isinstance(obj, np.generic):    # numpy scalars subclass float/int, but do not load with weights_only
        raise TypeError(f"{where} is a numpy {type(obj).__name__}; checkpoints hold only plain types "
                        "(None, bool, int, float, str, tensors, lists, dicts). Convert it with .item() or float(x)")
    if isinstance(obj, _PLAIN):
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"{where} has key {k!r} of type {type(k).__name__}; use str keys")
            check_plain(v, f"{where}[{k!r}]")
    else:
        raise TypeError(
            f"{where} is a {type(obj).__name__}; checkpoints hold only plain types "
            "(None, bool, int, float, str, tensors, lists, dicts). Convert it (e.g. float(x), str(path), x.tolist())"
        )


def plain_value(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (checkpoints and JSON take only plain types); others unchanged."""
    return value.item() if isinstance(value, np.generic) else value


def _save(path: str | os.PathLike, model: nn.Module, optimizer, history, meta) -> Path:
    payload = {
        "format": FORMAT,
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "history": history.to_dict(orient="list") if isinstance(history, pd.DataFrame) else history,
        "meta": dict(meta) if meta is not None else {},
    }
    check_plain(payload["history"], "history")
    check_plain(payload["meta"], "meta")
    return atomic_write(path, lambda f: torch.save(payload, f))


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    history: pd.DataFrame | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Save model (and optimizer) state, history and `meta` atomically; returns the path.

    `meta` and `history` must hold plain types (TypeError otherwise, before anything is written).
    """
    return _save(path, model, optimizer, history, meta)


def save_pruned(model: nn.Module, path: str | os.PathLike, *, meta: Mapping[str, Any] | None = None,
                optimizer: torch.optim.Optimizer | None = None) -> Path:
    """Save a (pruned) model's weights (their shapes are its widths); restore it with `load_pruned` and an unpruned
    model."""
    return _save(path, model, optimizer, None, meta)


# --------------------------------------------------------------------------- reading


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's payload (format 2 keys), read safely; `CheckpointError` naming the file if unreadable."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path.resolve()}. Fix: check the path (working directory is "
            f"{Path.cwd()}) or create it with save_checkpoint(path, model) / save_pruned(model, path).")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): an interrupted copy? Delete it and save again")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds on a damaged or foreign file
        first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise CheckpointError(
            f"{path} cannot be read as a pruning_lib checkpoint ({type(err).__name__}: {first}). It is truncated, "
            "damaged or not a checkpoint of this library; delete it and save the model again") from None
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT, *_OLD_FORMATS):
        raise CheckpointError(
            f"{path} is not a pruning_lib checkpoint (not written by save_pruned or save_checkpoint: no format "
            f"{FORMAT!r}); for a bare state dict use "
            "model.load_state_dict(torch.load(path, weights_only=True))")
    if payload["format"] != FORMAT:   # the two formats of version 1
        payload = {"widths": payload.get("widths"), "state_dict": payload.get("state_dict", payload.get("model")),
                   "optimizer": payload.get("optimizer"), "history": payload.get("history"),
                   "meta": payload.get("meta", {})}
    if not isinstance(payload.get("meta"), dict):
        raise CheckpointError(f"{path}: 'meta' is a {type(payload.get('meta')).__name__}, not a dict")
    return payload


def state_dict_differences(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "file") -> list[str]:
    """How `state` differs from ``model.state_dict()``: missing keys, unexpected keys, shape mismatches
    (at most 8 of each named); an empty list when they match."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: {source} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    parts = [f"missing keys {missing[:8]}" if missing else "",
             f"unexpected keys {unexpected[:8]}" if unexpected else "",
             f"shape mismatches {shapes[:8]}" if shapes else ""]
    return [p for p in parts if p]


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """``model.load_state_dict(state)``, or a ValueError naming what differs and how to rebuild the model."""
    differences = state_dict_differences(model, state, "checkpoint")
    if differences:
        raise ValueError(
            f"checkpoint {path} does not match {type(model).__name__}: " + "; ".join(differences)
            + ". Fix: build the model with the same architecture before loading (a pruned model "
            "has fewer filters: rebuild it with load_pruned).")
    model.load_state_dict(state)


def load_checkpoint(path: str | os.PathLike, model: nn.Module, *,
                    optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Load a `save_checkpoint` file into `model` (and `optimizer`) in place.

    Returns ``{"history": DataFrame or None, "meta": dict}``.
    """
    path = Path(path).expanduser()
    payload = read_checkpoint(path)
    load_state(model, payload["state_dict"], path)
    if optimizer is not None:
        if payload["optimizer"] is None:
            raise ValueError(f"checkpoint {path} has no optimizer state; pass optimizer=None, "
                             "or save with save_checkpoint(..., optimizer=opt)")
        try:
            optimizer.load_state_dict(payload["optimizer"])
        except ValueError as err:
            raise ValueError(f"optimizer state in {path} does not fit this optimizer ({err}); build the "
                             "optimizer over the same parameters, in the same order, as when saving") from err
    history = payload["history"]
    return {"history": pd.DataFrame(history) if history is not None else None, "meta": payload["meta"]}


def fingerprint(model: nn.Module) -> str:
    """SHA-256 (hex) of a model's state_dict: names, shapes, dtypes and values.  Same weights, same string."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
