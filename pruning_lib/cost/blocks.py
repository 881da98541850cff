"""Blocks: the pieces a network's time is the sum of, each one a kernel as the runtime runs it.

A block starts at every layer that makes new channels (a conv, a Linear: ``MIXES`` and ``DENSE`` in
`graph.layer_types`) and at every operation that reads several tensors (a residual addition, a concatenation);
each other operation joins the block of the one tensor it reads, as long as nothing else reads that tensor.  So
a block is what runtimes fuse or run back to back on the same tensor: a conv with its BatchNorm (folded when
deployed), its activation and the pooling after it; a residual addition with its activation; a depthwise conv
with what follows it.  Operations that only read a tensor's shape (``x.size(0)``) cost nothing and are copied
into the block that needs them.

A block's **signature** under some widths names everything its time depends on: each operation with its
sizes (``Conv2d(48, 64, kernel_size=(3, 3), ...)``) and the shapes of its inputs.  Two blocks with the same
signature take the same time, in any network (ResNet-18's repeated blocks share their entries).  `build` makes
the block at those widths as a module of its inputs, with its layers' weights sliced from the network's (random
values would do: a dense layer's time does not depend on them); `with_one_input` makes it a module of its main input
for a runtime that exports one (its other inputs become buffers).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from ..graph.functions import reads_only_shape
from ..graph.layer_types import DENSE, MIXES, PER_CHANNEL, flow_of, layer_type
from .network import Network, Widths

__all__ = ["Block", "BlockModule", "blocks_of", "build", "signature", "with_one_input"]


@dataclass(frozen=True)
class Block:
    """Consecutive nodes of a network's graph that run as one piece.

    Attributes:
        name: its first node's name.
        nodes: the nodes' names, in order (shape reads excluded).
        inputs: the tensors it reads from outside, by node name, the first one is its main input.
        groups: the prunable groups whose widths change any of its shapes.
    """

    name: str
    nodes: tuple[str, ...]
    inputs: tuple[str, ...]
    groups: frozenset[str]


def _starts_block(net: Network, node: fx.Node) -> bool:
    if node.op == "call_module":
        return flow_of(net.modules[node.target]) in (MIXES, DENSE)
    return False


def _tensor_inputs(net: Network, node: fx.Node) -> list[fx.Node]:
    return [a for a in node.all_input_nodes if net.is_tensor(a.name) and not reads_only_shape(a)]


def _readers(net: Network, node: fx.Node) -> list[fx.Node]:
    return [u for u in node.users if not reads_only_shape(u)]


def blocks_of(net: Network) -> list[Block]:
    """Split the network's compute nodes into blocks (see the module docstring)."""
    members: list[list[fx.Node]] = []
    block_of: dict[fx.Node, int] = {}
    for node in net.nodes:
        if reads_only_shape(node) or not net.is_tensor(node.name):
            continue
        inputs = _tensor_inputs(net, node)
        prev = inputs[0] if len(inputs) == 1 else None
        joins = (prev is not None and not _starts_block(net, node) and prev in block_of
                 and members[block_of[prev]][-1] is prev and len(_readers(net, prev)) == 1)
        if joins:
            members[block_of[prev]].append(node)
            block_of[node] = block_of[prev]
        else:
            members.append([node])
            block_of[node] = len(members) - 1
    blocks = []
    for nodes in members:
        inside = set(nodes)
        inputs = list(dict.fromkeys(a.name for n in nodes for a in _tensor_inputs(net, n) if a not in inside))
        groups = frozenset().union(*(net.groups_of(n) for n in [*inputs, *(m.name for m in nodes)]))
        blocks.append(Block(nodes[0].name, tuple(n.name for n in nodes), tuple(inputs), groups))
    return blocks


# ---------------------------------------------------------------- layers at other sizes
def resized(module: nn.Module, rows: list[int] | None, columns: list[int] | None, *, clone: bool = True) -> nn.Module:
    """A copy of `module` keeping the channels `rows` (dim 0 of its registered ``rows`` tensors) and the inputs
    `columns` (dim 1 of its ``columns`` tensor); None keeps all.  The original's tensors are never copied whole."""
    entry = layer_type(module)
    sliced: dict[str, torch.Tensor] = {}

    def cut(t: torch.Tensor, keep: list[int], dim: int) -> torch.Tensor:
        return t.index_select(dim, torch.tensor(keep, device=t.device)) if clone else t.narrow(dim, 0, len(keep))

    if entry is not None:
        for attr in entry.rows:
            t = getattr(module, attr, None)
            if isinstance(t, torch.Tensor) and rows is not None and t.shape[entry.row_dim(attr)] > len(rows):
                sliced[attr] = cut(t, rows, entry.row_dim(attr))
        if entry.columns and columns is not None:
            t = sliced.get(entry.columns, getattr(module, entry.columns, None))
            dim = entry.column_dim
            if isinstance(t, torch.Tensor) and t.dim() > dim and t.shape[dim] > len(columns):
                sliced[entry.columns] = cut(t, columns, dim)
    memo: dict[int, Any] = {}
    if not clone:                              # a description only: share every tensor that is not sliced
        for t in (*module.parameters(), *module.buffers()):
            memo[id(t)] = t
    for attr, t in sliced.items():
        original = getattr(module, attr)
        t = t.detach().clone() if clone else t.detach()
        memo[id(original)] = nn.Parameter(t, requires_grad=False) if isinstance(original, nn.Parameter) else t
    new = copy.deepcopy(module, memo)
    if entry is not None and sliced:
        entry.resize(new, len(rows) if flow_of(module) == PER_CHANNEL and rows is not None else None)
    return new


def _module_at(net: Network, node: fx.Node, widths: Widths, clone: bool) -> nn.Module:
    size = net.layer_size(node, widths)
    return resized(net.modules[node.target], size.rows, size.columns, clone=clone)


# ---------------------------------------------------------------- signatures
def _describe(value: Any, shapes: dict[str, tuple]) -> str:
    if isinstance(value, fx.Node):
        return f"<{shapes.get(value.name)}>"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_describe(v, shapes) for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_describe(v, shapes)}" for k, v in value.items()) + "}"
    return repr(value)


def _target_name(node: fx.Node) -> str:
    target = node.target
    return target if isinstance(target, str) else f"{getattr(target, '__module__', '')}.{getattr(target, '__name__', target)}"


def signature(net: Network, block: Block, widths: Widths) -> str:
    """Everything the block's time depends on, under `widths`: each operation with its sizes and input shapes."""
    nodes = {n.name: n for n in net.nodes}
    shapes = {name: net.shape(name, widths) for name in (*block.inputs, *block.nodes)}
    parts = [f"in {[shapes[i] for i in block.inputs]}"]
    for name in block.nodes:
        node = nodes[name]
        if node.op == "call_module":
            what = repr(_module_at(net, node, widths, clone=False))
        else:
            what = f"{node.op}:{_target_name(node)}"
        for a in node.all_input_nodes:
            if reads_only_shape(a):
                shapes.setdefault(a.name, f"{_target_name(a)}{_describe(a.args, shapes)}")
        parts.append(f"{what}{_describe(node.args, shapes)}{_describe(node.kwargs, shapes)}")
    return " | ".join(parts)


# ---------------------------------------------------------------- the block as a module
class BlockModule(nn.Module):
    """A block as a module of its main input; its other inputs are buffers (``extra0``, ...): what a runtime that
    exports one input (ONNX) runs."""

    def __init__(self, body: fx.GraphModule, extras: list[torch.Tensor]) -> None:
        super().__init__()
        self.body = body
        self.extras = len(extras)
        for i, t in enumerate(extras):
            self.register_buffer(f"extra{i}", t)

    def forward(self, x: torch.Tensor) -> Any:
        return self.body(x, *(getattr(self, f"extra{i}") for i in range(self.extras)))


def build(net: Network, block: Block, widths: Widths) -> tuple[fx.GraphModule, list[tuple[int, ...]]]:
    """The block at `widths` as a module of all its inputs (eval mode, on the CPU), and their shapes in order."""
    nodes = {n.name: n for n in net.trace.graph.nodes}
    graph, env, modules = fx.Graph(), {}, {}
    for name in block.inputs:
        env[nodes[name]] = graph.placeholder(f"in_{name}")

    def arg(n: fx.Node) -> fx.Node:
        if n not in env and reads_only_shape(n):          # x.size(0): copied in, reading the block's own tensor
            env[n] = graph.node_copy(n, arg)
        return env[n]

    for name in block.nodes:
        node = nodes[name]
        if node.op == "call_module":
            modules[node.target] = _module_at(net, node, widths, clone=True)
        env[node] = graph.node_copy(node, arg)
    graph.output(env[nodes[block.nodes[-1]]])
    body = fx.GraphModule(modules, graph).cpu().eval()
    return body, [net.shape(name, widths) for name in block.inputs]


def with_one_input(body: fx.GraphModule, shapes: list[tuple[int, ...]]) -> BlockModule:
    """`build`'s block as a module of its first input, its other inputs random buffers of their shapes."""
    return BlockModule(body, [torch.randn(s) for s in shapes[1:]]).eval()
