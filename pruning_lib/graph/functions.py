"""What each *function* or *method* call of a traced graph does to channels (module calls: `layer_types`).

Per-channel functions (``F.relu``, ``x.sigmoid()``, ``F.max_pool2d``, dropout) leave channel k where it is; a
flatten (``torch.flatten(x, 1)``, ``x.view(x.size(0), -1)``) lays channel k out as the column block k of a
Linear's input; ``torch.cat(dim=1)`` places its inputs' channels side by side.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F

__all__ = ["ADD", "CHANNELWISE_FUNCTIONS", "CHANNELWISE_METHODS", "MUL", "cat_dim", "flattens_batch", "is_batch_size",
           "is_flatten_call", "is_in_place", "reads_only_shape"]

#: Functions that act on each channel separately (a removed channel stays "removed").
CHANNELWISE_FUNCTIONS = {
    torch.relu, F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.mish, torch.sigmoid, torch.tanh, F.sigmoid,
    F.hardswish, F.hardsigmoid, F.hardtanh, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
    F.dropout, F.dropout2d,
}
#: Tensor methods that act on each channel separately.
CHANNELWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone"}
ADD = {operator.add, operator.iadd, torch.add}
MUL = {operator.mul, operator.imul, torch.mul}
try:                                     # torchvision's stochastic depth drops whole samples: channel-wise
    from torchvision.ops import stochastic_depth

    CHANNELWISE_FUNCTIONS.add(stochastic_depth)
except ImportError:  # pragma: no cover - torchvision is a dependency
    pass


def is_flatten_call(node: fx.Node) -> bool:
    """``torch.flatten(x, 1)`` or ``x.flatten(1)`` (channel-major, one row per example)."""
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


def reads_only_shape(node: fx.Node) -> bool:
    """``x.size()``, ``x.dim()``, ``x.shape``, ``x.dtype``, ``x.device``: numbers, not channels."""
    return (node.op == "call_method" and node.target in ("size", "dim")) or \
        (node.op == "call_function" and node.target is getattr and node.args[1:2] in (("shape",), ("dtype",), ("device",)))


def is_in_place(node: fx.Node) -> bool:
    """A Tensor method that changes its input in place (``x.add_(y)``), other than the per-channel ``relu_``."""
    name = str(node.target)
    return node.op == "call_method" and name.endswith("_") and not name.endswith("__") and name not in CHANNELWISE_METHODS


def cat_dim(node: fx.Node) -> int | None:
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    return dim if isinstance(dim, int) else None
