"""A network as the costs see it: every tensor's shape, every layer's size, as functions of the groups' widths.

`Network` analyses a model once (its channel groups and every node's channel layout, `graph.groups.trace_groups`;
every node's shape at one batch, `torch.fx`'s ShapeProp) and then answers, for any widths ``{group: channels}``
at or below the current ones, without building that network:

- `shape`: the shape of every tensor (a group's channels sit in dim 1; a flattened tensor holds `span` columns
  per channel);
- `params` and `flops`: the parameter count and the FLOPs per image, exactly (a layer's FLOPs and weights scale
  with its output channels times its input channels: both are bilinear in the widths, so they never add up
  group by group);
- `layer_sizes`: each layer's rows and columns (for `blocks`, which builds pieces of the network at those sizes).

How a layer type holds its channels comes from the registry of `graph.layer_types` alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.passes.shape_prop import ShapeProp

from ..graph.groups import GroupTrace, trace_groups
from ..graph.layer_types import DENSE, MIXES, PER_CHANNEL, flow_of, layer_type
from ..measure.counting import count_parameters, flops_per_layer
from ..runtime import Inputs, first_examples, mode, model_device, move

__all__ = ["LayerSize", "Network", "Widths"]

Widths = Mapping[str, int]


@dataclass(frozen=True)
class LayerSize:
    """A layer's channels under some widths: which of its ``rows`` (per-channel rows, dim 0 of its registered
    ``rows`` tensors) and of its ``columns`` (dim 1 of its ``columns`` tensor) are kept, as index lists in its
    current order; None where nothing changes (or the layer type has none)."""

    rows: list[int] | None
    columns: list[int] | None


class Network:
    """`model` analysed once at the batch `input_shape` ``(N, C, H, W)`` (or on the inputs themselves: a tensor, a
    tuple or a dict of tensors, for a model with several inputs); its current widths are `widths`.

    Attributes:
        trace: the groups and layouts (`graph.groups.GroupTrace`).
        widths: ``{group: channels}`` of every prunable group now.
        modules: ``{name: module}`` of the model.
        nodes: the compute nodes of the graph in order (``call_module``, ``call_function``, ``call_method``).
    """

    def __init__(self, model: nn.Module, input_shape: Sequence[int] | Inputs, trace: GroupTrace | None = None) -> None:
        self.model = model
        shaped = isinstance(input_shape, (tuple, list, torch.Size)) and all(isinstance(d, int) for d in input_shape)
        self.inputs = None if shaped else input_shape              # a model with several inputs: the inputs
        self.input_shape = tuple(int(d) for d in input_shape) if shaped else None
        self.trace = trace or trace_groups(model)
        self.modules = dict(model.named_modules())
        self.widths = {g.name: g.size for g in self.trace.groups.values() if not g.refused}
        self._shapes = self._propagate()
        self.nodes = [n for n in self.trace.graph.nodes if n.op in ("call_module", "call_function", "call_method")]
        self._flops = self._layer_flops()
        self._params = count_parameters(model)

    # ---------------------------------------------------------------- shapes
    def _propagate(self) -> dict[str, tuple[int, ...] | None]:
        """Every node's output shape at the batch (None for what is not one tensor: a size, a tuple)."""
        graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        for node in self.trace.graph.nodes:                      # a copy: ShapeProp writes into the nodes' meta
            env[node] = graph.node_copy(node, lambda n: env[n])
        module = fx.GraphModule(self.model, graph)
        device = model_device(self.model)
        if self.inputs is None:
            dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), torch.float32)
            args = [torch.randn(self.input_shape, device=device, dtype=dtype)]
        else:
            inputs = move(self.inputs, device)
            names = [n.target for n in graph.nodes if n.op == "placeholder"]
            args = ([inputs[n] for n in names] if isinstance(inputs, dict) else
                    list(inputs) if isinstance(inputs, (tuple, list)) else [inputs])
        with mode(self.model, training=False), torch.no_grad():
            ShapeProp(module).propagate(*args)
        out = {}
        for node in graph.nodes:
            meta = node.meta.get("tensor_meta")
            out[node.name] = tuple(int(d) for d in meta.shape) if hasattr(meta, "shape") else None
        return out

    def is_tensor(self, node: str) -> bool:
        return self._shapes.get(node) is not None

    def shape(self, node: str, widths: Widths | None = None) -> tuple[int, ...] | None:
        """The shape of `node`'s output when the groups have `widths` (groups not named keep theirs)."""
        base = self._shapes.get(node)
        if base is None or not widths:
            return base
        layout = self.trace.layouts.get(node)
        flat = self.trace.flat.get(node) if layout is None else None
        if layout is None and flat is None:
            return base
        now = sum(self.widths.get(g, s) for g, s in (layout or flat))
        new = sum(widths.get(g, self.widths.get(g, s)) for g, s in (layout or flat))
        if new == now:
            return base
        dim1 = new if layout is not None else base[1] // now * new
        return (base[0], dim1, *base[2:])

    def kept(self, node: str, widths: Widths | None) -> list[int] | None:
        """The channels of `node`'s output kept under `widths` (each group keeps its first channels, wherever they
        sit in the tensor; a flattened tensor keeps their column blocks), or None when nothing changes."""
        if not widths or self._shapes.get(node) is None:
            return None
        layout = self.trace.layouts.get(node)
        flat = self.trace.flat.get(node) if layout is None else None
        segments = layout or flat
        if not segments or all(widths.get(g, self.widths.get(g, n)) >= n for g, n in segments):
            return None
        span = 1 if layout is not None else self._shapes[node][1] // sum(n for _, n in segments)
        kept, offset = [], 0
        for g, n in segments:
            keep = min(n, widths.get(g, self.widths.get(g, n)))
            kept += [(offset + c) * span + t for c in range(keep) for t in range(span)]
            offset += n
        return kept

    def groups_of(self, node: str) -> set[str]:
        """The prunable groups whose widths change `node`'s output."""
        return {g for g, _ in (self.trace.layouts.get(node) or self.trace.flat.get(node) or ()) if g in self.widths}

    # ---------------------------------------------------------------- layer sizes
    def layer_size(self, node: fx.Node, widths: Widths | None = None) -> LayerSize:
        """Which rows and columns of a module node are kept under `widths` (from its input's and output's
        channels: a conv's or Linear's rows are its output channels, its columns its input's; a per-channel
        layer's rows are its input's channels)."""
        flow = flow_of(self.modules[node.target])
        source = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        inp = self.kept(source.name, widths) if source is not None else None
        if flow in (MIXES, DENSE):
            return LayerSize(self.kept(node.name, widths), inp)
        if flow == PER_CHANNEL:
            return LayerSize(inp, None)
        return LayerSize(None, None)

    def _scales(self, node: fx.Node, widths: Widths) -> tuple[float, float]:
        """How much a module's rows and columns shrink under `widths` (1.0: unchanged)."""
        new = self.layer_size(node, widths)
        if new.rows is None and new.columns is None:
            return 1.0, 1.0
        out = self._shapes[node.name]
        source = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        inp = self._shapes.get(source.name) if source is not None else None
        flow = flow_of(self.modules[node.target])
        rows_now = (out if flow in (MIXES, DENSE) else inp)[1]
        rows = len(new.rows) / rows_now if new.rows is not None else 1.0
        columns = len(new.columns) / inp[1] if new.columns is not None else 1.0
        return rows, columns

    # ---------------------------------------------------------------- parameters and FLOPs
    def _layer_flops(self) -> dict[str, float]:
        example = (1, *self.input_shape[1:]) if self.inputs is None else first_examples(self.inputs, 1)
        table = flops_per_layer(self.model, example)
        return dict(zip(table["module"], table["flops"].astype(float)))

    def params(self, widths: Widths | None = None) -> int:
        """The parameter count under `widths`, exactly (every tensor's rows and columns scaled)."""
        total = self._params
        if not widths:
            return total
        seen = set()
        for node in self.nodes:
            if node.op != "call_module" or node.target in seen:
                continue
            seen.add(node.target)
            entry = layer_type(self.modules[node.target])
            if entry is None:
                continue
            rows, columns = self._scales(node, widths)
            if rows == columns == 1.0:
                continue
            for attr in dict.fromkeys((*entry.rows, *((entry.columns,) if entry.columns else ()))):
                t = getattr(self.modules[node.target], attr, None)
                if isinstance(t, nn.Parameter):
                    scale = (rows if attr in entry.rows else 1.0) * (columns if attr == entry.columns else 1.0)
                    total -= round(t.numel() * (1 - scale))
        return int(total)

    def flops_per_channel(self) -> dict[str, float]:
        """GFLOPs per image one channel of each prunable group costs (`plan.flops_per_channel`'s numbers, from this
        analysis: a group's FLOPs are linear in its width, so one channel costs what removing one saves)."""
        total = self.flops()
        return {g: (total - self.flops({g: w - 1})) / 1e9 for g, w in self.widths.items()}

    def flops(self, widths: Widths | None = None) -> float:
        """FLOPs per image under `widths` (2 per multiply-add, convs and Linears: `measure.counting`), exactly."""
        total = sum(self._flops.values())
        if not widths:
            return total
        for node in self.nodes:
            if node.op == "call_module" and node.target in self._flops:
                rows, columns = self._scales(node, widths)
                total -= self._flops[node.target] * (1 - rows * columns)
        return total
