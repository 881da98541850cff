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

__all__ = ["Inputs", "autocast_dtype", "batch_size", "call", "describe_inputs", "first_examples", "iteration_seed", "mode",
           "model_device", "move", "num_threads", "pick_device", "random_state", "resolve_device", "seed_everything"]


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


def resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """Where to put the inputs: `device` if given, else the model's; the model is never moved, and a model that lives
    elsewhere than `device` is an error naming both (move it first)."""
    here = model_device(model)
    if device is None:
        return here
    device = torch.device(device)
    has_tensors = next(itertools.chain(model.parameters(), model.buffers()), None) is not None
    same = here.type == device.type and (device.index is None or here.index is None or device.index == here.index)
    if has_tensors and not same:
        raise ValueError(f"model parameters are on {here} but device={str(device)!r}; call model.to({str(device)!r}) "
                         f"first or pass device={str(here)!r}")
    return device


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


#: What a model takes: one tensor, a tuple of positional tensors, or a dict of keyword tensors (batch first in each).
Inputs = torch.Tensor | tuple | list | dict


def call(model: nn.Module, inputs: Inputs):
    """``model(inputs)``, ``model(*inputs)`` or ``model(**inputs)`` for a tensor, a tuple (list) or a dict."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _tensors(inputs: Inputs) -> list[torch.Tensor]:
    values = inputs.values() if isinstance(inputs, dict) else inputs if isinstance(inputs, (tuple, list)) else [inputs]
    return [v for v in values if isinstance(v, torch.Tensor)]


def move(inputs: Inputs, device: torch.device | str, **kwargs) -> Inputs:
    """The same inputs on `device` (tensors moved, other values kept; ``kwargs`` go to ``Tensor.to``)."""
    def to(v):
        return v.to(device, **kwargs) if isinstance(v, torch.Tensor) else v
    if isinstance(inputs, dict):
        return {k: to(v) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(to(v) for v in inputs)
    return to(inputs)


def batch_size(inputs: Inputs) -> int:
    """The batch size: dim 0 of the (first) tensor."""
    tensors = _tensors(inputs)
    if not tensors or tensors[0].dim() == 0:
        raise ValueError(f"the inputs hold no tensor with a batch dimension: {describe_inputs(inputs)}")
    return int(tensors[0].shape[0])


def first_examples(inputs: Inputs, n: int) -> Inputs:
    """The first `n` examples of every tensor (other values kept)."""
    def cut(v):
        return v[:n] if isinstance(v, torch.Tensor) and v.dim() > 0 else v
    if isinstance(inputs, dict):
        return {k: cut(v) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(cut(v) for v in inputs)
    return cut(inputs)


def describe_inputs(inputs) -> str:
    """Shapes and dtypes, for an error message: ``"a tensor (1, 3, 32, 32) float32"``, ``"a dict {'x': ...}"``."""
    def one(v):
        if isinstance(v, torch.Tensor):
            return f"{tuple(v.shape)} {str(v.dtype).removeprefix('torch.')}"
        return type(v).__name__
    if isinstance(inputs, torch.Tensor):
        return f"a tensor {one(inputs)}"
    if isinstance(inputs, dict):
        return "a dict {" + ", ".join(f"{k!r}: {one(v)}" for k, v in inputs.items()) + "}"
    if isinstance(inputs, (tuple, list)):
        return f"a {type(inputs).__name__} (" + ", ".join(one(v) for v in inputs) + ")"
    return f"a {type(inputs).__name__}"


@contextmanager
def random_state(*generators: torch.Generator | None) -> Iterator[None]:
    """Run a block, then put back Python's, NumPy's and torch's random states (CPU and CUDA) and those of
    `generators` (a DataLoader's, say): whatever the block seeds, the caller's random streams are as they were."""
    saved = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
             torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
             [(g, g.get_state()) for g in generators if g is not None])
    try:
        yield
    finally:
        py, numpy_state, cpu, cuda, gens = saved
        random.setstate(py)
        np.random.set_state(numpy_state)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        for g, state in gens:
            g.set_state(state)
