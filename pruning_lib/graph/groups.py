"""Channel groups: the sets of channels that must be removed together, found from the model's data flow.

This is the one analysis every part of the method reads: criteria score groups, plans name them, surgery
removes from them.  A conv's filter k makes channel k of its output.  In a plain chain only the next conv
reads it, so the group is that one filter: a conv in a chain is a group with one producer.  In modern
networks channels are *tied*:

- a residual ``add`` ties the channels of all its inputs and its output: channel k of the sum exists only
  if it goes from every producer that writes into the sum (each block's last conv, a downsample conv, the
  stem), and from every layer that reads the sum;
- ``torch.cat`` along channels places each input's channels at an offset of the output;
- a depthwise conv (groups == in == out channels) passes its channels through: its filter k reads only
  channel k, so it shrinks with the conv that feeds it;
- a per-channel ``mul`` (squeeze-and-excitation's scale) ties the excitation's last conv to the main path;
- BatchNorm, activations, pooling, dropout and identity act on each channel separately.

What a module does to channels comes from the registry of `layer_types`; what a function does, from
`functions`.  `channel_groups` follows every tensor of the ``torch.fx`` graph with its *layout*: the groups
whose channels it holds, in order, each at an offset.  A group is the set of its **members**: producers
(their output rows), per-channel layers on the way (BatchNorms, depthwise convs), and readers (a conv's input
channels, or the first Linear's channel-major column blocks), each at the offset where the group's channels
sit in that module.  An activation module called several times (one ``self.relu`` after every conv) is fine:
it has no state.  Whatever couples channels in a way not handled here marks the groups it touches as
**refused**, with the operation and the module path.  The result is plain data a notebook can print (`describe`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
import torch.fx as fx
import torch.nn as nn

from .functions import (ADD, CHANNELWISE_FUNCTIONS, CHANNELWISE_METHODS, MUL, cat_dim, flattens_batch, is_flatten_call,
                        is_in_place, reads_only_shape)
from .layer_types import DENSE, FLATTENS, MIXES, PASSES, PER_CHANNEL, channels_of, flow_of, is_producer, layer_type
from .trace import trace

__all__ = ["ChannelGroup", "GroupTrace", "Layout", "Member", "channel_groups", "describe", "group_of", "group_widths",
           "trace_groups"]


@dataclass(frozen=True)
class Member:
    """One module's part in a group: which of its channels the group's channels are.

    ``role``: ``"out"`` (a producer: its output rows), ``"through"`` (a per-channel layer on the way: a
    BatchNorm's or a depthwise conv's channels), ``"in"`` (a reader: a conv's input columns, or the first
    Linear's column blocks of ``span`` columns per channel, flatten being channel-major).
    Channel k of the group is channel ``offset + k`` of the module (column block ``offset + k`` for a Linear).
    """

    module: str
    role: str
    offset: int = 0
    span: int = 1


@dataclass
class ChannelGroup:
    """Channels that go together.  ``name`` is the first producer (plans may name any producer)."""

    name: str
    size: int
    members: list[Member] = field(default_factory=list)
    refused: str | None = None

    @property
    def producers(self) -> list[str]:
        return [m.module for m in self.members if m.role == "out"]

    @property
    def readers(self) -> list[str]:
        return [m.module for m in self.members if m.role == "in"]

    def as_dict(self) -> dict:
        """Plain data: name, size, producers, readers, the other members, and why it is refused (or None)."""
        return {"name": self.name, "size": self.size, "producers": self.producers, "readers": self.readers,
                "passing": [m.module for m in self.members if m.role == "through"], "refused": self.refused}


class _Groups:
    """Union-find over group ids, each with its members and refusal."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.members: list[list[Member]] = []
        self.refused: list[str | None] = []

    def new(self, size: int, producer: str) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.members.append([Member(producer, "out")])
        self.refused.append(None)
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a != b:
            first, second = min(a, b), max(a, b)      # the earlier group keeps its name
            self.parent[second] = first
            self.members[first] += self.members[second]
            self.refused[first] = self.refused[first] or self.refused[second]
            a = first
        return a

    def add(self, g: int, member: Member) -> None:
        self.members[self.find(g)].append(member)

    def refuse(self, g: int, why: str) -> None:
        g = self.find(g)
        self.refused[g] = self.refused[g] or why


_IdLayout = tuple[tuple[int, int], ...]     # ((group id, channels), ...) in channel order, during the walk
#: Where a tensor's channels come from: ``((group name, channels), ...)`` in channel order.
Layout = tuple[tuple[str, int], ...]


def _describe_node(node: fx.Node, modules: Mapping[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"{node.target} ({type(modules[node.target]).__name__})"
    target = getattr(node.target, "__name__", str(node.target))
    return f"{target} ({node.op}, node {node.name})"


class _Tracer:
    """Walks the graph once, in order, giving every node a layout and filling the groups."""

    def __init__(self, model: nn.Module, graph: fx.Graph) -> None:
        self.modules = dict(model.named_modules())
        self.graph = graph
        self.groups = _Groups()
        self.layout: dict[fx.Node, _IdLayout | None] = {}
        self.flat: dict[fx.Node, _IdLayout] = {}       # flattened (N, C*S) tensors: the layout of their channels
        self.calls: dict[str, int] = {}
        for node in graph.nodes:
            if node.op == "call_module":
                self.calls[node.target] = self.calls.get(node.target, 0) + 1

    # -- helpers
    def _refuse(self, layout: _IdLayout | None, why: str) -> None:
        for g, _ in layout or ():
            self.groups.refuse(g, why)

    def _inputs(self, node: fx.Node) -> list[fx.Node]:
        return [a for a in node.all_input_nodes]

    def _refuse_inputs(self, node: fx.Node, why: str) -> None:
        for a in self._inputs(node):
            self._refuse(self.layout.get(a), why)
            self._refuse(self.flat.get(a), why)

    def _members_at(self, layout: _IdLayout, module: str, role: str, span: int = 1) -> None:
        offset = 0
        for g, size in layout:
            self.groups.add(g, Member(module, role, offset, span))
            offset += size

    # -- the walk
    def run(self) -> None:
        for node in self.graph.nodes:
            if node.op == "placeholder" or node.op == "get_attr":
                self.layout[node] = None
            elif node.op == "output":
                self._refuse_inputs(node, "it reaches the model's output (pruning it would change the output's shape)")
            elif node.op == "call_module":
                self._module(node)
            else:
                self._function(node)

    def _module(self, node: fx.Node) -> None:
        m, name = self.modules[node.target], node.target
        x = node.args[0] if node.args else None
        layout = self.layout.get(x) if isinstance(x, fx.Node) else None
        flat = self.flat.get(x) if isinstance(x, fx.Node) else None
        flow, shared = flow_of(m), self.calls[name] > 1
        self.layout[node] = None
        if flow is None:
            self._refuse_inputs(node, f"{name} ({type(m).__name__}) is not a layer type the library knows "
                                      "(register it with graph.layer_types.register_layer_type)")
        elif flow == PASSES:                                     # a shared activation is fine: it has no state
            self.layout[node] = layout
            if flat:
                self.flat[node] = flat                           # dropout between flatten and the Linear
        elif shared and flow != FLATTENS:
            why = f"{name} is called {self.calls[name]} times (shared weights)"
            self._refuse_inputs(node, why)
            if flow == MIXES or (flow == DENSE and is_producer(m) and flat):
                g = self.groups.new(channels_of(m), name)
                self.groups.refuse(g, why)
                self._output(node, flow, ((g, channels_of(m)),))
        elif flow == MIXES:
            if layout:
                self._members_at(layout, name, "in")
            g = self.groups.new(channels_of(m), name)
            self.layout[node] = ((g, channels_of(m)),)
        elif flow == PER_CHANNEL:
            if layout:
                self._members_at(layout, name, "through")
            elif flat:
                self._per_channel_flat(m, name, node, flat)
            self.layout[node] = layout
        elif flow == FLATTENS:
            if layout:
                self.flat[node] = layout
        elif flow == DENSE:
            self._dense(m, name, node, layout, flat)
        else:                                                    # a refusal sentence from the layer type
            self._refuse_inputs(node, f"{name}: {flow}")
            if layer_type(m).rows:
                g = self.groups.new(channels_of(m), name)
                self.groups.refuse(g, f"{name}: {flow}")
                self.layout[node] = ((g, channels_of(m)),)

    def _output(self, node: fx.Node, flow: str, layout: _IdLayout) -> None:
        if flow == DENSE:
            self.flat[node] = layout                             # (N, features): one column per channel
        else:
            self.layout[node] = layout

    def _per_channel_flat(self, m: nn.Module, name: str, node: fx.Node, flat: _IdLayout) -> None:
        """A per-channel layer on a flattened tensor (BatchNorm1d after a Linear): one row per column, so a
        channel's rows are its column block."""
        channels, rows = sum(s for _, s in flat), channels_of(m)
        if rows % channels:
            self._refuse(flat, f"{name} has {rows} rows, not a multiple of the {channels} channels it reads")
            return
        self._members_at(flat, name, "through", rows // channels)
        self.flat[node] = flat

    def _dense(self, m: nn.Module, name: str, node: fx.Node, layout: _IdLayout | None, flat: _IdLayout | None) -> None:
        """A Linear (or another DENSE type) reading the flattened channels as column blocks; when it names rows, its
        outputs (hidden units) are a group of their own, read by what follows as one column each."""
        if flat:
            entry = layer_type(m)
            channels, inputs = sum(s for _, s in flat), getattr(m, entry.columns).shape[entry.column_dim]
            if inputs % channels:
                self._refuse(flat, f"{name} has {inputs} inputs, not a multiple of the {channels} channels "
                                   "flattened into it")
            else:
                self._members_at(flat, name, "in", inputs // channels)
            if is_producer(m):
                g = self.groups.new(channels_of(m), name)
                self._output(node, DENSE, ((g, channels_of(m)),))
        if layout:
            self._refuse(layout, f"{name} ({type(m).__name__}) couples channels with positions: it reads a 4-D map "
                                 "directly")

    def _function(self, node: fx.Node) -> None:
        args = [a for a in node.args if isinstance(a, fx.Node)]
        layouts = [self.layout.get(a) for a in args]
        target = node.target
        if reads_only_shape(node):
            self.layout[node] = None                    # x.size(0), x.shape[0]: numbers, not channels
            return
        if flattens_batch(node) and args and (layouts[0] or args[0] in self.flat):   # x.view(x.size(0), -1)
            self.layout[node] = None
            self.flat[node] = layouts[0] or self.flat[args[0]]
            return
        if (node.op == "call_function" and target in CHANNELWISE_FUNCTIONS) or \
                (node.op == "call_method" and target in CHANNELWISE_METHODS):
            self.layout[node] = layouts[0] if layouts else None
            if args and args[0] in self.flat:
                self.flat[node] = self.flat[args[0]]
            return
        if self._spatial_mean(node, layouts):
            return
        if is_flatten_call(node):
            self.layout[node] = None
            if layouts and layouts[0]:
                self.flat[node] = layouts[0]
            return
        if node.op == "call_function" and target in ADD:
            self.layout[node] = self._merge(node, layouts, "residual addition")
            return
        if node.op == "call_function" and target in MUL:
            self.layout[node] = self._scale(node, args, layouts)
            return
        if node.op == "call_function" and target is torch.cat and cat_dim(node) == 1:
            tensors = node.args[0] if node.args else node.kwargs.get("tensors", ())
            parts = [self.layout.get(t) if isinstance(t, fx.Node) else None for t in tensors]
            if any(p is None for p in parts):
                for p in parts:
                    self._refuse(p, f"concatenation {node.name} mixes them with channels of unknown origin")
                self.layout[node] = None
            else:
                self.layout[node] = tuple(seg for p in parts for seg in p)
            return
        if is_in_place(node):
            self._refuse_inputs(node, f"it is changed in place by Tensor.{target} (write it out of place)")
            self.layout[node] = None
            return
        if not any(layouts) and not any(self.flat.get(a) for a in args):
            self.layout[node] = None
            return
        self._refuse_inputs(node, f"{_describe_node(node, self.modules)} couples channels in a way the surgery does not handle")
        self.layout[node] = None

    def _spatial_mean(self, node: fx.Node, layouts: list[_IdLayout | None]) -> bool:
        """``x.mean([2, 3])`` / ``torch.mean(x, (2, 3))``: a pooled (N, C) tensor, read like a flattened one."""
        is_mean = (node.op == "call_method" and node.target == "mean") or \
                  (node.op == "call_function" and node.target is torch.mean)
        if not is_mean or not layouts or not layouts[0]:
            return False
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        if dims is None or sorted(d % 4 for d in (dims if isinstance(dims, (list, tuple)) else [dims])) != [2, 3]:
            return False
        if keepdim:
            self.layout[node] = layouts[0]
        else:
            self.layout[node] = None
            self.flat[node] = layouts[0]
        return True

    def _merge(self, node: fx.Node, layouts: list[_IdLayout | None], what: str) -> _IdLayout | None:
        """Tie the inputs' channels segment by segment (their segments must line up)."""
        tensors = [lay for lay in layouts if lay]
        if not tensors:
            return None
        if len(tensors) < len([a for a in node.args if isinstance(a, fx.Node)]):
            for lay in tensors:        # one input is not from a conv (the input image, a constant tensor)
                self._refuse(lay, f"the {what} {node.name} adds channels of unknown origin")
            return None
        first = tensors[0]
        for other in tensors[1:]:
            if [s for _, s in other] != [s for _, s in first]:
                for lay in tensors:
                    self._refuse(lay, f"the {what} {node.name} adds tensors whose groups do not line up")
                return None
        merged = tuple((self.groups.find(g), s) for g, s in first)
        for other in tensors[1:]:
            merged = tuple((self.groups.union(g, h), s) for (g, s), (h, _) in zip(merged, other))
        return merged

    def _scale(self, node: fx.Node, args: list[fx.Node], layouts: list[_IdLayout | None]) -> _IdLayout | None:
        """x * s: a per-channel scale s (squeeze-and-excitation) ties s's producer to x's channels."""
        if len(args) == 1 and layouts[0]:
            return layouts[0]                    # multiplication by a constant
        if len(args) == 2 and all(layouts):
            return self._merge(node, layouts, "per-channel multiplication")
        self._refuse_inputs(node, f"multiplication {node.name} mixes channels with a tensor of unknown origin")
        return None

    def named(self, groups: Mapping[int, str]) -> tuple[dict[str, Layout], dict[str, Layout]]:
        """Every node's layout, and every flattened tensor's, by node name, in group names."""
        def name(layout):
            return tuple((groups[self.groups.find(g)], s) for g, s in layout)
        return ({n.name: name(lay) for n, lay in self.layout.items() if lay},
                {n.name: name(lay) for n, lay in self.flat.items() if lay})

    def result(self) -> dict[str, ChannelGroup]:
        out: dict[str, ChannelGroup] = {}
        roots = sorted({self.groups.find(g) for g in range(len(self.groups.parent))})
        for r in roots:
            members = self.groups.members[r]
            name = members[0].module
            group = ChannelGroup(name, self.groups.size[r], list(dict.fromkeys(members)), self.groups.refused[r])
            if not group.readers and all(flow_of(self.modules[p]) == DENSE for p in group.producers):
                continue                                     # a Linear's outputs nothing reads: the logits
            if not group.readers and not group.refused:
                group.refused = "nothing reads its channels"
            out[name] = group
        return out


@dataclass(frozen=True)
class GroupTrace:
    """The groups of a traced network and where every tensor's channels come from.

    ``layouts[node]``: the channels of a node's (N, C, ...) output, as ``((group name, channels), ...)`` in
    channel order; ``flat[node]``: the same for a flattened (N, C·S) tensor (S positions per channel).  A node
    in neither holds no channels of a group (the input image, a shape, the logits of a refused head).
    """

    graph: fx.Graph
    groups: dict[str, ChannelGroup]
    layouts: dict[str, Layout]
    flat: dict[str, Layout]


def trace_groups(model: nn.Module, graph: fx.Graph | None = None) -> GroupTrace:
    """Trace `model` (or read `graph`, its trace): its channel groups and every node's channel layout.

    Raises:
        NotImplementedError: ``torch.fx`` cannot trace the model (the message names the call).
        TypeError: a wrapper (DataParallel, torch.compile) instead of the network.
    """
    if graph is None:
        graph = trace(model)                  # refuses wrappers (DataParallel, torch.compile) first
    tracer = _Tracer(model, graph)
    tracer.run()
    groups = tracer.result()
    names = {tracer.groups.find(g): None for g in range(len(tracer.groups.parent))}
    names = {r: tracer.groups.members[r][0].module for r in names}
    layouts, flat = tracer.named(names)
    return GroupTrace(graph, groups, layouts, flat)


def channel_groups(model: nn.Module, graph: fx.Graph | None = None) -> dict[str, ChannelGroup]:
    """Trace `model` (or read `graph`, its trace) and return its channel groups, keyed by their first producer conv.

    Raises:
        NotImplementedError: ``torch.fx`` cannot trace the model (the message names the call).
        TypeError: a wrapper (DataParallel, torch.compile) instead of the network.
    """
    return trace_groups(model, graph).groups


def group_widths(model: nn.Module) -> dict[str, int]:
    """Channels of every prunable group, ``{group name: size}`` (the group's name is its first producer conv)."""
    return {g.name: g.size for g in channel_groups(model).values() if not g.refused}


def group_of(groups: Mapping[str, ChannelGroup]) -> dict[str, str]:
    """Every producer conv -> the name of its group."""
    return {p: g.name for g in groups.values() for p in g.producers}


def describe(groups: Mapping[str, ChannelGroup]) -> list[dict]:
    """The groups as plain rows (name, size, producers, readers, passing, refused), for printing."""
    return [g.as_dict() for g in groups.values()]
