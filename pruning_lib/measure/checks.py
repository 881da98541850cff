"""Argument checks and the input batch shared by the measuring modules (counting, latency, memory).

Each check returns the value to use or raises a `ValueError` that names the argument and shows a valid one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["make_input", "validate_input_shape", "validate_num_threads", "validate_positive"]


def validate_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """Return ``input_shape`` as a tuple of positive ints, or raise a ``ValueError`` naming it."""
    ok = (
        isinstance(input_shape, (tuple, list, torch.Size))
        and len(input_shape) >= 2
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_shape)
    )
    if not ok:
        raise ValueError(
            f"input_shape must be a tuple of positive ints that starts with the batch dim, "
            f"e.g. (1, 3, 224, 224); got {input_shape!r}"
        )
    return tuple(input_shape)


def validate_positive(name: str, value: float) -> None:
    """Raise a ``ValueError`` naming `name` unless `value` is a number > 0 (not a bool)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be a positive number; got {value!r}")


def validate_num_threads(num_threads: int | None) -> int:
    """Return the thread count to use (``None`` means the current ``torch.get_num_threads()``)."""
    if num_threads is None:
        return torch.get_num_threads()
    if not isinstance(num_threads, int) or isinstance(num_threads, bool) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive int or None; got {num_threads!r}")
    return num_threads


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first parameter (CPU/float32 if it has none)."""
    for p in model.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def make_input(model: nn.Module, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """A deterministic random input of ``shape`` with the model's dtype, on ``device``."""
    _, dtype = _model_device_dtype(model)
    gen = torch.Generator().manual_seed(0)
    return torch.randn(shape, generator=gen, dtype=dtype).to(device)
