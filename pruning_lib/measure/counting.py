"""Counting: parameters, size on disk and FLOPs of a model (no timing).

Conventions (the notebooks quote these numbers, so they are fixed here):

- **FLOPs** come from ``torch.utils.flop_counter.FlopCounterMode``, which counts **2 FLOPs per
  multiply-add** and does *not* count bias additions, activations, pooling or element-wise adds.
  So a ``Conv2d`` costs ``2 * C_out * (C_in / groups) * k_h * k_w * H_out * W_out`` and a ``Linear``
  ``2 * N * in_features * out_features``.  ``count_macs`` is ``count_flops // 2``.
- **MB** means 10^6 bytes (not MiB).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .. import runtime
from .checks import make_input, validate_input_shape

__all__ = ["count_flops", "count_macs", "count_parameters", "flops_per_layer", "size_on_disk_mb"]


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters in ``model`` (trainable or not; shared ones counted once).

    Buffers such as BatchNorm running statistics are not parameters and are not counted.
    """
    return sum(p.numel() for p in model.parameters())


def size_on_disk_mb(model: nn.Module) -> float:
    """Size of ``torch.save(model.state_dict())`` in MB (1 MB = 10^6 bytes).

    Includes buffers (e.g. BatchNorm running stats) and a small pickle overhead, so a
    float32 model is slightly more than ``4 * count_parameters(model) / 1e6`` MB.
    """
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 1e6


def _are_inputs(value) -> bool:
    """A tensor, or a tuple, list or dict of tensors: inputs themselves, not a shape."""
    if isinstance(value, torch.Tensor):
        return True
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (tuple, list)) else ()
    return len(items) > 0 and all(isinstance(v, torch.Tensor) for v in items)


def _run_flop_counter(
    model: nn.Module, input_shape: Sequence[int] | runtime.Inputs, device: str | torch.device | None
) -> FlopCounterMode:
    """Run one eval-mode, no-grad forward pass under ``FlopCounterMode`` and return the counter.  `input_shape` is a
    shape (a random input is built) or the inputs themselves (a tensor, a tuple or a dict of tensors)."""
    if _are_inputs(input_shape):
        x = runtime.move(input_shape, runtime.resolve_device(model, device))
    else:
        x = make_input(model, validate_input_shape(input_shape), runtime.resolve_device(model, device))
    counter = FlopCounterMode(display=False)
    with runtime.mode(model), torch.no_grad(), counter:
        runtime.call(model, x)
    return counter


def count_flops(
    model: nn.Module, input_shape: Sequence[int], *, device: str | torch.device | None = None
) -> int:
    """FLOPs of one forward pass on an input of ``input_shape`` (batch dim included).

    Counted by ``FlopCounterMode``: 2 FLOPs per multiply-add, bias/activations/pooling not
    counted (see the module docstring). FLOPs scale linearly with the batch size, so
    ``count_flops(m, (8, 3, 32, 32)) == 8 * count_flops(m, (1, 3, 32, 32))``.

    Args:
        model: the network; it is not moved, and its train/eval flags are restored.
        input_shape: e.g. ``(1, 3, 224, 224)`` for one ``(N, C, H, W)`` image; or the inputs themselves (a
            tensor, a tuple or a dict of tensors, for a model with several inputs).
        device: where to build the input; ``None`` means the model's device.
    """
    return int(_run_flop_counter(model, input_shape, device).get_total_flops())


def count_macs(
    model: nn.Module, input_shape: Sequence[int], *, device: str | torch.device | None = None
) -> int:
    """Multiply-accumulates of one forward pass: ``count_flops(...) // 2``.

    ``FlopCounterMode`` counts each multiply-add as 2 FLOPs, so MACs are half the FLOPs.
    """
    return count_flops(model, input_shape, device=device) // 2


def _tracker_names(model: nn.Module) -> dict[str, tuple[str, nn.Module]]:
    """Map FlopCounterMode's module keys (``"ResNet.layer1.0.conv1"``) to ``(fqn, module)``."""
    root = type(model).__name__
    return {(f"{root}.{fqn}" if fqn else root): (fqn, m) for fqn, m in model.named_modules()}


def flops_per_layer(model: nn.Module, input_shape: Sequence[int]) -> pd.DataFrame:
    """FLOPs of each leaf module (one without children) for one forward pass.

    Returns a DataFrame with one row per leaf module that has FLOPs, in ``named_modules``
    order, with columns ``module`` (qualified name, ``""`` if the model itself is a leaf),
    ``type`` (class name), ``flops`` (for the whole batch of ``input_shape``) and ``params``
    (the module's own parameters). FLOPs done by functional calls inside a non-leaf
    ``forward`` (e.g. ``torch.matmul`` in an attention block) are not attributed to any
    row, so ``flops.sum()`` can be less than :func:`count_flops`.
    """
    counts = _run_flop_counter(model, input_shape, None).get_flop_counts()
    names = _tracker_names(model)
    rows = []
    for key, (fqn, module) in names.items():
        flops = sum(counts.get(key, {}).values())
        if next(module.children(), None) is None and flops > 0:
            params = sum(p.numel() for p in module.parameters())
            rows.append({"module": fqn, "type": type(module).__name__, "flops": int(flops),
                         "params": params})
    return pd.DataFrame(rows, columns=["module", "type", "flops", "params"])
