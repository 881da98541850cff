"""Where and how a model runs: device, seeds, train/eval mode and thread count, each set and restored.

Every other module uses these helpers instead of writing its own, so "eval mode, then restore each
submodule's flag" and "this many threads, then restore the count" mean the same everywhere.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

__all__ = ["autocast_dtype", "iteration_seed", "mode", "model_device", "num_threads", "pick_device", "seed_everything"]


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


def iteration_seed(seed: int, iteration: int) -> int:
    """The one seed formula of Prune–Train–Repeat: iteration `iteration` of a run seeded with `seed`.

    It seeds the batches, dropout and the random criterion of that iteration, so a resumed run
    repeats exactly what an uninterrupted one does.
    """
    return seed * 100_003 + iteration


def model_device(model: nn.Module) -> torch.device:
    """Where the model's first parameter (or buffer) lives; the CPU for a model without tensors."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@contextmanager
def mode(model: nn.Module, training: bool = False) -> Iterator[nn.Module]:
    """Put ``model`` in train (or eval) mode; afterwards restore every submodule's own flag."""
    before = {m: m.training for m in model.modules()}
    model.train(training)
    try:
        yield model
    finally:
        for m, was_training in before.items():
            m.training = was_training


@contextmanager
def num_threads(n: int | None) -> Iterator[int]:
    """Run with ``torch.set_num_threads(n)`` (``None``: the current count); restore the count afterwards."""
    previous = torch.get_num_threads()
    if n is None:
        n = previous
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"num_threads must be a positive int or None; got {n!r}")
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(previous)


def autocast_dtype(device: torch.device, policy: str = "auto") -> torch.dtype | None:
    """The mixed-precision dtype for training on `device`, or None for full float32.

    ``"auto"``: bfloat16 on a CUDA GPU that supports it, else float16 (with a gradient scaler) on CUDA;
    float32 on CPU and MPS, where it is the fast and exact choice.  ``"bf16"``, ``"fp16"``: forced
    (CUDA only); ``"off"``: float32 everywhere.
    """
    if policy not in ("auto", "bf16", "fp16", "off"):
        raise ValueError(f"mixed precision must be 'auto', 'bf16', 'fp16' or 'off'; got {policy!r}")
    if policy == "off" or device.type != "cuda":
        return None
    if policy == "bf16" or (policy == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16
