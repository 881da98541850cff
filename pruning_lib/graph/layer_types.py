"""Layer types: how each kind of module treats channels, in one registry that the analysis and the surgery read.

An entry says what a module does to the channels of the tensor it reads (its **flow**), which of its tensors
hold one row per channel (**rows**, sliced along dim 0 when channels go), which tensor holds its input channels
in dim 1 (**columns**), and how to set its size attributes afterwards (**resize**):

==============  ==========================================================  ====================================
flow            what it does                                                examples
==============  ==========================================================  ====================================
``MIXES``       reads C_in channels, makes C_out new ones: a group ends at   ``Conv1d``/``Conv2d``/``Conv3d``,
                its input (columns) and a new one starts at its output       ``ConvTranspose2d`` (groups=1)
                (rows)
``PER_CHANNEL`` keeps channel k at k, with per-channel state: it shrinks    ``BatchNorm2d``, a depthwise conv,
                with the group (rows)                                       ``PReLU(C)``
``PASSES``      keeps channel k at k, no per-channel state                  activations, pooling, dropout
``FLATTENS``    lays channel k out as column block k                        ``Flatten()``
``DENSE``       reads a flattened tensor's column blocks (columns) and, if  ``Linear``: its hidden units are
                it names rows, makes new channels (a group of hidden units)  channels like a conv's filters
==============  ==========================================================  ====================================

Any other flow is a sentence saying why channels cannot be pruned through the module (a grouped conv).  A
module type not registered (nor a subclass of one) is refused by the analysis, naming it.  Rows sit in dim 0 of a
tensor and columns in dim 1 unless the entry says otherwise (`row_dims`, `column_dim`: a transposed conv's weight
is (C_in, C_out, k, k)).  ``keeps_positions`` says whether a per-channel module keeps every value where it is
(BatchNorm, an activation) or mixes positions within a channel (pooling, a depthwise conv): data criteria read a
group's map at the end of the chain of modules that keep positions.  Adding a layer type is one call, e.g. a
per-channel scale with a ``(C,)`` parameter ``gain``::

    register_layer_type(ChannelScale, LayerType(PER_CHANNEL, rows=("gain",)))

`producers` (`is_producer`) are the modules that make channels: what a plan names, and what a pruned network's
widths are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
import torch.nn as nn

__all__ = ["DENSE", "FLATTENS", "LAYER_TYPES", "MIXES", "PASSES", "PER_CHANNEL", "LayerType", "channels_of", "flow_of",
           "is_producer", "keeps_positions", "layer_type", "producers", "register_layer_type"]

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
        rows: attributes with one entry per channel (None attributes are skipped).
        columns: the attribute that holds the input channels (a Linear: column blocks).
        resize: ``resize(module, channels)`` sets the size attributes after slicing; `channels` is the new
            number of per-channel rows for a ``PER_CHANNEL`` member, else None.
        row_dims: ``{attribute: dim}`` where a rows attribute keeps its channels in another dim than 0.
        column_dim: the dim of `columns` that holds the input channels.
        keeps_positions: whether the module keeps every value at its position (see the module docstring).
    """

    flow: str | Callable[[nn.Module], str]
    rows: tuple[str, ...] = ()
    columns: str | None = None
    resize: Callable[[nn.Module, int | None], None] = _keep_size
    row_dims: Mapping[str, int] = field(default_factory=dict)
    column_dim: int = 1
    keeps_positions: bool = True

    def row_dim(self, attr: str) -> int:
        return self.row_dims.get(attr, 0)


def _conv_flow(conv: nn.modules.conv._ConvNd) -> str:
    if conv.groups == 1:
        return MIXES
    if conv.groups == conv.in_channels == conv.out_channels and not conv.transposed:
        return PER_CHANNEL                                   # depthwise: filter k reads only channel k
    return f"it is a grouped conv (groups={conv.groups}): whole groups would have to go (not supported)"


def _conv_resize(conv: nn.modules.conv._ConvNd, channels: int | None) -> None:
    if channels is not None:                                 # a depthwise conv shrinks with its channels
        conv.groups = channels
    if conv.transposed:                                      # weight (C_in, C_out / groups, k...)
        conv.in_channels, conv.out_channels = conv.weight.shape[0], conv.weight.shape[1] * conv.groups
    else:                                                    # weight (C_out, C_in / groups, k...)
        conv.out_channels, conv.in_channels = conv.weight.shape[0], conv.weight.shape[1] * conv.groups


def _batchnorm_resize(bn: nn.modules.batchnorm._BatchNorm, channels: int | None) -> None:
    if channels is not None:                                 # also without affine parameters or running statistics
        bn.num_features = channels


def _linear_resize(linear: nn.Linear, channels: int | None) -> None:
    linear.out_features, linear.in_features = linear.weight.shape


def _prelu_flow(prelu: nn.PReLU) -> str:
    return PASSES if prelu.num_parameters == 1 else PER_CHANNEL


def _prelu_resize(prelu: nn.PReLU, channels: int | None) -> None:
    if channels is not None and prelu.num_parameters != 1:
        prelu.num_parameters = channels


def _flatten_flow(flatten: nn.Flatten) -> str:
    if flatten.start_dim == 1 and flatten.end_dim == -1:
        return FLATTENS
    return f"it flattens dims {flatten.start_dim}..{flatten.end_dim}, not (channels, positions) per example"


_CONV = LayerType(_conv_flow, rows=("weight", "bias"), columns="weight", resize=_conv_resize, keeps_positions=False)
_TRANSPOSED = LayerType(_conv_flow, rows=("weight", "bias"), columns="weight", resize=_conv_resize,
                        row_dims={"weight": 1}, column_dim=0, keeps_positions=False)
_BATCHNORM = LayerType(PER_CHANNEL, rows=("weight", "bias", "running_mean", "running_var"), resize=_batchnorm_resize)

#: module type -> LayerType; subclasses inherit their base class's entry.
LAYER_TYPES: dict[type, LayerType] = {
    **dict.fromkeys((nn.Conv1d, nn.Conv2d, nn.Conv3d), _CONV),
    **dict.fromkeys((nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d), _TRANSPOSED),
    **dict.fromkeys((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d), _BATCHNORM),
    nn.Linear: LayerType(DENSE, rows=("weight", "bias"), columns="weight", resize=_linear_resize),
    nn.Flatten: LayerType(_flatten_flow),
    nn.PReLU: LayerType(_prelu_flow, rows=("weight",), resize=_prelu_resize),
}
for _type in (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
              nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
              nn.AlphaDropout, nn.Identity):
    LAYER_TYPES[_type] = LayerType(PASSES)
for _type in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
              nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
              nn.AdaptiveMaxPool3d):
    LAYER_TYPES[_type] = LayerType(PASSES, keeps_positions=False)
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
    if entry.flow in (MIXES, DENSE) and not entry.columns:
        raise ValueError(f"a {entry.flow} layer type must name the tensor that holds its input channels "
                         "(e.g. columns='weight')")
    LAYER_TYPES[module_type] = entry


def layer_type(module: nn.Module) -> LayerType | None:
    """The registry's entry for `module`'s type or its nearest registered base class; None if unknown."""
    for cls in type(module).__mro__:
        if cls in LAYER_TYPES:
            return LAYER_TYPES[cls]
    return None


def is_producer(module: nn.Module) -> bool:
    """Whether `module` makes channels of its own: a ``MIXES`` type, or a ``DENSE`` one that names rows."""
    entry = layer_type(module)
    return entry is not None and flow_of(module) in (MIXES, DENSE) and bool(entry.rows)


def producers(model: nn.Module) -> dict[str, nn.Module]:
    """The model's modules that make channels, ``{name: module}`` (what plans name and widths count)."""
    return {name: m for name, m in model.named_modules() if is_producer(m)}


def channels_of(module: nn.Module) -> int:
    """How many channels a producer (or a per-channel module) holds: its first rows tensor along its rows dim."""
    entry = layer_type(module)
    for attr in entry.rows:
        t = getattr(module, attr, None)
        if isinstance(t, torch.Tensor):
            return int(t.shape[entry.row_dim(attr)])
    return int(getattr(module, "num_features"))


def keeps_positions(module: nn.Module) -> bool:
    """Whether a module keeps every value at its position (see the module docstring); False for unknown types."""
    entry = layer_type(module)
    return entry is not None and entry.keeps_positions and flow_of(module) in (PASSES, PER_CHANNEL)


def flow_of(module: nn.Module) -> str | None:
    """What `module` does to channels: a flow, a refusal sentence, or None for an unregistered type."""
    entry = layer_type(module)
    if entry is None:
        return None
    return entry.flow(module) if callable(entry.flow) else entry.flow
