"""Layer types: how each kind of module treats channels, in one registry that the analysis and the surgery read.

An entry says what a module does to the channels of the tensor it reads (its **flow**), which of its tensors
hold one row per channel (**rows**, sliced along dim 0 when channels go), which tensor holds its input channels
in dim 1 (**columns**), and how to set its size attributes afterwards (**resize**):

==============  ==========================================================  ====================================
flow            what it does                                                examples
==============  ==========================================================  ====================================
``MIXES``       reads C_in channels, makes C_out new ones: a group ends at   ``Conv2d`` (groups=1)
                its input (columns) and a new one starts at its output
                (rows)
``PER_CHANNEL`` keeps channel k at k, with per-channel state: it shrinks    ``BatchNorm2d``, a depthwise conv,
                with the group (rows)                                       ``PReLU(C)``
``PASSES``      keeps channel k at k, no per-channel state                  activations, pooling, dropout
``FLATTENS``    lays channel k out as column block k                        ``Flatten()``
``DENSE``       reads a flattened tensor's column blocks (columns)          ``Linear``
==============  ==========================================================  ====================================

Any other flow is a sentence saying why channels cannot be pruned through the module (a grouped conv).  A
module type not registered (nor a subclass of one) is refused by the analysis, naming it.  Adding a layer type
is one call, e.g. a per-channel scale with a ``(C,)`` parameter ``gain``::

    register_layer_type(ChannelScale, LayerType(PER_CHANNEL, rows=("gain",)))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

__all__ = ["DENSE", "FLATTENS", "LAYER_TYPES", "MIXES", "PASSES", "PER_CHANNEL", "LayerType", "flow_of",
           "layer_type", "register_layer_type"]

MIXES, PER_CHANNEL, PASSES, FLATTENS, DENSE = "mixes", "per_channel", "passes", "flattens", "dense"
FLOWS = (MIXES, PER_CHANNEL, PASSES, FLATTENS, DENSE)


def _keep_size(module: nn.Module, channels: int | None) -> None:
    """Modules whose size attributes never change (pooling, activations)."""


@dataclass(frozen=True)
class LayerType:
    """How one module type treats channels.

    Attributes:
        flow: one of the flows above, or a function ``module -> flow or refusal sentence`` (when it depends
            on the module's settings, as a conv's ``groups``).
        rows: attributes with one entry per channel along dim 0 (None attributes are skipped).
        columns: the attribute whose dim 1 holds the input channels (a Linear: column blocks).
        resize: ``resize(module, channels)`` sets the size attributes after slicing; `channels` is the new
            number of per-channel rows for a ``PER_CHANNEL`` member, else None.
    """

    flow: str | Callable[[nn.Module], str]
    rows: tuple[str, ...] = ()
    columns: str | None = None
    resize: Callable[[nn.Module, int | None], None] = _keep_size


def _conv_flow(conv: nn.Conv2d) -> str:
    if conv.groups == 1:
        return MIXES
    if conv.groups == conv.in_channels == conv.out_channels:
        return PER_CHANNEL                                   # depthwise: filter k reads only channel k
    return f"it is a grouped conv (groups={conv.groups}): whole groups would have to go (not supported)"


def _conv_resize(conv: nn.Conv2d, channels: int | None) -> None:
    if channels is not None:                                 # a depthwise conv shrinks with its channels
        conv.groups = channels
    conv.out_channels, conv.in_channels = conv.weight.shape[0], conv.weight.shape[1] * conv.groups


def _batchnorm_resize(bn: nn.BatchNorm2d, channels: int | None) -> None:
    if channels is not None:                                 # also without affine parameters or running statistics
        bn.num_features = channels


def _linear_resize(linear: nn.Linear, channels: int | None) -> None:
    linear.in_features = linear.weight.shape[1]


def _prelu_flow(prelu: nn.PReLU) -> str:
    return PASSES if prelu.num_parameters == 1 else PER_CHANNEL


def _prelu_resize(prelu: nn.PReLU, channels: int | None) -> None:
    if channels is not None and prelu.num_parameters != 1:
        prelu.num_parameters = channels


def _flatten_flow(flatten: nn.Flatten) -> str:
    if flatten.start_dim == 1 and flatten.end_dim == -1:
        return FLATTENS
    return f"it flattens dims {flatten.start_dim}..{flatten.end_dim}, not (channels, positions) per example"


#: module type -> LayerType; subclasses inherit their base class's entry.
LAYER_TYPES: dict[type, LayerType] = {
    nn.Conv2d: LayerType(_conv_flow, rows=("weight", "bias"), columns="weight", resize=_conv_resize),
    nn.BatchNorm2d: LayerType(PER_CHANNEL, rows=("weight", "bias", "running_mean", "running_var"),
                              resize=_batchnorm_resize),
    nn.Linear: LayerType(DENSE, columns="weight", resize=_linear_resize),
    nn.Flatten: LayerType(_flatten_flow),
    nn.PReLU: LayerType(_prelu_flow, rows=("weight",), resize=_prelu_resize),
}
for _type in (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
              nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.MaxPool2d, nn.AvgPool2d,
              nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.Identity):
    LAYER_TYPES[_type] = LayerType(PASSES)
try:                                     # torchvision's stochastic depth drops whole samples: channel-wise
    from torchvision.ops import StochasticDepth

    LAYER_TYPES[StochasticDepth] = LayerType(PASSES)
except ImportError:  # pragma: no cover - torchvision is a dependency
    pass


def register_layer_type(module_type: type, entry: LayerType) -> None:
    """Teach the analysis and the surgery a module type (replacing its entry if it had one)."""
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"register a subclass of nn.Module, got {module_type!r}")
    if isinstance(entry.flow, str) and entry.flow not in FLOWS:
        raise ValueError(f"flow {entry.flow!r} is not one of {FLOWS} (or a function returning one)")
    if entry.flow in (MIXES, PER_CHANNEL) and not entry.rows:
        raise ValueError(f"a {entry.flow} layer type must name its per-channel rows (e.g. rows=('weight',))")
    LAYER_TYPES[module_type] = entry


def layer_type(module: nn.Module) -> LayerType | None:
    """The registry's entry for `module`'s type or its nearest registered base class; None if unknown."""
    for cls in type(module).__mro__:
        if cls in LAYER_TYPES:
            return LAYER_TYPES[cls]
    return None


def flow_of(module: nn.Module) -> str | None:
    """What `module` does to channels: a flow, a refusal sentence, or None for an unregistered type."""
    entry = layer_type(module)
    if entry is None:
        return None
    return entry.flow(module) if callable(entry.flow) else entry.flow
