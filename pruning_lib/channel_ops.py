"""What each operation of a traced graph does to channels: the vocabulary `couplings` and `groups` share.

Per-channel operations (activations, BatchNorm's neighbours: pooling, dropout, identity) leave channel k
where it is; a flatten (``torch.flatten(x, 1)``, ``nn.Flatten()``, ``x.view(x.size(0), -1)``) lays channel
k out as the column block k of a Linear's input; ``torch.cat(dim=1)`` places its inputs' channels side by side.
"""

from __future__ import annotations

import operator
from typing import Mapping

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ACTIVATIONS", "CHANNELWISE_FUNCTIONS", "CHANNELWISE_METHODS", "CHANNELWISE_MODULES", "FUNCTIONAL_ACTIVATIONS",
           "FUNCTIONAL_SPATIAL", "METHOD_ACTIVATIONS", "SPATIAL", "cat_dim", "flattens_batch", "is_batch_size", "is_flatten"]

# Modules that act on each channel separately (so a removed channel stays "removed").
ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus,
)
SPATIAL = (
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
    nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.Identity,
)
FUNCTIONAL_ACTIVATIONS = {
    torch.relu, F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.mish,
    torch.sigmoid, torch.tanh, F.hardswish, F.hardtanh,
}
FUNCTIONAL_SPATIAL = {
    F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.dropout,
}
METHOD_ACTIVATIONS = {"relu", "relu_", "sigmoid", "tanh"}

CHANNELWISE_MODULES = ACTIVATIONS + SPATIAL
CHANNELWISE_FUNCTIONS = FUNCTIONAL_ACTIVATIONS | FUNCTIONAL_SPATIAL | {
    F.relu6, F.hardsigmoid, F.sigmoid, F.dropout2d}
CHANNELWISE_METHODS = METHOD_ACTIVATIONS | {"contiguous", "clone"}
try:                                     # torchvision's stochastic depth drops whole samples: channel-wise
    from torchvision.ops import StochasticDepth, stochastic_depth

    CHANNELWISE_MODULES += (StochasticDepth,)
    CHANNELWISE_FUNCTIONS.add(stochastic_depth)
except ImportError:  # pragma: no cover - torchvision is a dependency
    pass


def is_flatten(node: fx.Node, modules: Mapping[str, nn.Module]) -> bool:
    if node.op == "call_module":
        m = modules[node.target]
        return isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1
    if node.target is torch.flatten or (node.op == "call_method" and node.target == "flatten"):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return start == 1 and end == -1
    return False


def flattens_batch(node: fx.Node) -> bool:
    """``x.view(n, -1)`` / ``x.reshape(n, -1)`` / ``torch.reshape(x, (n, -1))``: flattened per example, channel-major."""
    if node.op == "call_method" and node.target in ("view", "reshape"):
        shape = node.args[1:]
    elif node.op == "call_function" and node.target is torch.reshape:
        shape = node.args[1:2]
    else:
        return False
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return len(shape) == 2 and shape[1] == -1 and is_batch_size(shape[0])


def is_batch_size(n) -> bool:
    """``x.size(0)`` or ``x.shape[0]`` (a literal number could merge examples: not recognised)."""
    if not isinstance(n, fx.Node):
        return False
    if n.op == "call_method" and n.target == "size":
        return n.args[1:2] == (0,) or n.kwargs.get("dim") == 0
    return (n.op == "call_function" and n.target is operator.getitem and n.args[1] == 0
            and isinstance(n.args[0], fx.Node) and n.args[0].target is getattr and n.args[0].args[1] == "shape")


def cat_dim(node: fx.Node) -> int | None:
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    return dim if isinstance(dim, int) else None
