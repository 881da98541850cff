"""The statistics pass: what every criterion reads of a group, in one pass over the data.

`group_maps` finds, for each group, where its channels leave their per-channel chain (after the BatchNorm and the
activation, before pooling, flatten or a reader): its **maps**.  `collect_stats` runs the model's traced graph with
observer nodes ("taps") inserted after every map and before every reader, and adds up, per channel, the sums the
activation criteria need (on the maps, and on what the readers read) and the Taylor sums (each reader's own part of
the gradient, the |·| per example).  An activation module used after several convs, ``F.relu`` or ``nn.ReLU`` give
the same sums, and a batch split does not change them; under several processes the sums are added over them.
The criteria (`criteria`) turn these sums into scores.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import distributed
from ..graph.functions import ADD, CHANNELWISE_FUNCTIONS, CHANNELWISE_METHODS, MUL, cat_dim, reads_only_shape
from ..graph.groups import ChannelGroup, GroupTrace, trace_groups
from ..graph.layer_types import keeps_positions
from ..runtime import batch_size, call, mode, model_device

__all__ = ["Batches", "ChannelStats", "Sums", "collect_stats", "group_maps"]

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def _zeros(size: int = 0) -> torch.Tensor:
    return torch.zeros(size, dtype=torch.float64)


@dataclass
class Sums:
    """Per-channel sums over a set of maps, (size,) float64 each: how many values, Σ z, Σ z², how many z == 0."""

    count: torch.Tensor = field(default_factory=_zeros)
    total: torch.Tensor = field(default_factory=_zeros)
    total_sq: torch.Tensor = field(default_factory=_zeros)
    zeros: torch.Tensor = field(default_factory=_zeros)

    FIELDS = ("count", "total", "total_sq", "zeros")

    @classmethod
    def empty(cls, size: int) -> Sums:
        return cls(*(_zeros(size) for _ in cls.FIELDS))

    def add(self, z: torch.Tensor) -> None:
        """Add maps z, (N, size, positions) float64."""
        self.count += z.shape[0] * z.shape[2]
        self.total += z.sum(dim=(0, 2)).cpu()
        self.total_sq += z.square().sum(dim=(0, 2)).cpu()
        self.zeros += (z == 0).sum(dim=(0, 2)).double().cpu()

    def mean(self) -> torch.Tensor:
        """Θ_MA = 1/I Σ_i z_i over every value I of the channel's maps."""
        return self.total / self.count

    def std(self) -> torch.Tensor:
        """Θ_std = sqrt(1/I Σ_i (z_i − μ)²), the population standard deviation."""
        return (self.total_sq / self.count - self.mean().square()).clamp_min(0).sqrt()

    def zero_share(self) -> torch.Tensor:
        """APoZ: the share of the values that are exactly 0."""
        return self.zeros / self.count


@dataclass
class ChannelStats:
    """What one statistics pass saw of a group, per channel (float64 tensors of shape (size,)).

    ``maps``: sums over the group's maps (`group_maps`); ``read``: over its readers' inputs; ``taylor``:
    Σ_examples |Σ_readers Σ_m ∂ℓ/∂r · r| / M; ``examples``: how many examples.
    """

    examples: int = 0
    maps: Sums = field(default_factory=Sums)
    read: Sums = field(default_factory=Sums)
    taylor: torch.Tensor = field(default_factory=_zeros)

    @classmethod
    def empty(cls, size: int) -> ChannelStats:
        return cls(0, Sums.empty(size), Sums.empty(size), _zeros(size))

    def flat(self) -> torch.Tensor:
        """[examples, maps' sums, readers' sums, taylor] as one float64 vector (for adding over processes)."""
        sums = [getattr(s, f) for s in (self.maps, self.read) for f in Sums.FIELDS]
        return torch.cat([torch.tensor([float(self.examples)], dtype=torch.float64), *sums, self.taylor])

    @classmethod
    def from_flat(cls, flat: torch.Tensor, size: int) -> ChannelStats:
        parts = flat[1:].view(2 * len(Sums.FIELDS) + 1, size).clone()
        n = len(Sums.FIELDS)
        return cls(int(flat[0]), Sums(*parts[:n]), Sums(*parts[n:2 * n]), parts[2 * n])


# ---------------------------------------------------------------- where the pass looks
def _continues(node: fx.Node, modules: Mapping[str, nn.Module]) -> bool:
    """Whether a per-channel chain goes on through `node`: it keeps every value of channel k at its position
    (BatchNorm, an activation, dropout, a residual addition, a per-channel scale, a concatenation along channels).
    A conv (a depthwise one too: it mixes positions), pooling, flatten, a mean, a Linear end the chain."""
    if node.op == "call_module":
        return keeps_positions(modules[node.target])
    if node.op == "call_function":
        if node.target in ADD or node.target in MUL:
            return True
        if node.target is torch.cat:
            return cat_dim(node) == 1
        pooling = "pool" in getattr(node.target, "__name__", "")                  # F.max_pool2d, F.adaptive_avg_pool2d
        return node.target in CHANNELWISE_FUNCTIONS and not pooling
    return node.op == "call_method" and node.target in CHANNELWISE_METHODS


def group_maps(model: nn.Module, traced: GroupTrace | None = None) -> dict[str, list[tuple[str, int]]]:
    """Where each prunable group's channels leave their per-channel chain: ``{group: [(fx node, offset), ...]}``.

    A node is on group G's chain if it is one of G's producers, or it `_continues` a node on the chain and its
    output still holds G's channels (the layouts of `graph.groups.trace_groups`; `traced` if the caller has it): a
    residual addition continues the chain of the producer whose output it adds (also when the other input is a
    pooled map, as after a ResNet's stem), a squeeze-and-excitation product that of the excitation conv.  A node on
    the chain is one of G's **maps** when something other than the chain reads it (a reader, pooling, flatten, the
    output; a mere ``x.size(0)`` does not count): in a chain, the output of the conv's activation; in a residual
    stage, the stem's (before its pooling) and every block's output (after its addition and activation); the input
    of a depthwise conv.  The offset is where G's channels sit in that node's output (after others in a
    concatenation).
    """
    traced = trace_groups(model) if traced is None else traced
    modules = dict(model.named_modules())
    producer_of = {p: g.name for g in traced.groups.values() if not g.refused for p in g.producers}

    def layout(node: fx.Node):                       # (N, C, ...) maps, or (N, C) units of a Linear's group
        return traced.layouts.get(node.name) or traced.flat.get(node.name) or ()

    def holds(node: fx.Node) -> set[str]:
        return {g for g, _ in layout(node)}

    on: dict[fx.Node, set[str]] = {}                  # node -> the groups whose chain it is on
    continued: dict[fx.Node, set[str]] = {}           # node -> the groups whose chain goes on through it
    for node in traced.graph.nodes:
        on[node], continued[node] = set(), set()
        if node.op == "call_module" and node.target in producer_of:
            on[node] = {producer_of[node.target]}
        elif _continues(node, modules):
            on[node] = continued[node] = {g for a in node.all_input_nodes for g in on.get(a, ())} & holds(node)
    out: dict[str, list[tuple[str, int]]] = {}
    for node, chains in on.items():
        users = [u for u in node.users if not reads_only_shape(u)]
        for g in sorted(chains):
            if any(g not in continued[u] for u in users):     # read by something else (a producer of G too)
                offset = 0
                for held, size in layout(node):
                    if held == g:
                        out.setdefault(g, []).append((node.name, offset))
                    offset += size
    return out


# ---------------------------------------------------------------- the statistics pass
def _readers(groups: Mapping[str, ChannelGroup]) -> dict[str, list[tuple[str, int, int]]]:
    """reader module -> [(group, offset, span)] for the prunable groups."""
    out: dict[str, list[tuple[str, int, int]]] = {}
    for g in groups.values():
        if not g.refused:
            for m in g.members:
                if m.role == "in":
                    out.setdefault(m.module, []).append((g.name, m.offset, m.span))
    return out


def _channels(r: torch.Tensor, offset: int, size: int, span: int) -> torch.Tensor:
    """A reader's input as (N, size, positions) for the group's channels: a conv's maps or a Linear's blocks."""
    if r.dim() == 2:                                    # a Linear: channel-major column blocks of `span`
        r = r.reshape(r.shape[0], -1, span)
    return r[:, offset:offset + size].reshape(r.shape[0], size, -1)


def _add_batch(stats: dict[str, ChannelStats], groups, readers, inputs, positions: Mapping[str, int]) -> None:
    """Add one batch of the readers' inputs: for each group, the sums over its readers (Taylor: summed over readers
    before |·|)."""
    parts: dict[str, list] = {}
    for reader, (r, grad) in inputs.items():
        for group, offset, span in readers[reader]:
            size = groups[group].size
            dz = None if grad is None else _channels(grad.double(), offset, size, span)
            parts.setdefault(group, []).append((_channels(r.double(), offset, size, span), dz))
    for group, seen in parts.items():
        s = stats[group]
        s.examples += seen[0][0].shape[0]
        for z, _ in seen:
            s.read.add(z)
        if seen[0][1] is not None:
            change = sum((dz * z).sum(dim=2) for z, dz in seen if dz is not None)    # (N, size), signed
            s.taylor += (change / positions[group]).abs().sum(dim=0).cpu()


def _sum_over_processes(stats: dict[str, ChannelStats], sizes: Mapping[str, int],
                        collective: distributed.Collective) -> None:
    """Add up every process's sums, in place, so the stats are those of one process seeing every shard.  Each sum
    (Taylor's included: its |·| is per example) adds over examples, so adding over processes is exact."""
    names = sorted(stats)
    flat = torch.cat([stats[n].flat() for n in names])
    collective.all_reduce(flat)
    offset = 0
    for n in names:
        length = 1 + (2 * len(Sums.FIELDS) + 1) * sizes[n]
        stats[n] = ChannelStats.from_flat(flat[offset:offset + length], sizes[n])
        offset += length


class _Tap(nn.Module):
    """An observer node of the statistics pass: calls `fn` on the tensor it is given (and returns what fn returns)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor | None:
        return self.fn(x)


def _tapped(model: nn.Module, traced: GroupTrace, *, read: Callable, observe: Callable, measure: Callable) -> fx.GraphModule:
    """The model's traced graph as a GraphModule (sharing the model's modules) with taps: ``read(reader)`` before
    every reader (its result is what the reader reads), ``observe(parts)`` after every map node (`group_maps`),
    ``measure(group)`` after each group's first producer."""
    gm = fx.GraphModule(model, copy.deepcopy(traced.graph))
    nodes = {n.name: n for n in gm.graph.nodes}
    modules = {n.target: n for n in gm.graph.nodes if n.op == "call_module"}
    prunable = {n: g for n, g in traced.groups.items() if not g.refused}

    taps: list[str] = []

    def tap(fn) -> str:
        taps.append(f"_criteria_tap_{len(taps)}")
        gm.add_submodule(taps[-1], _Tap(fn))
        return taps[-1]

    for reader in _readers(prunable):
        node = modules[reader]
        with gm.graph.inserting_before(node):
            node.update_arg(0, gm.graph.call_module(tap(read(reader)), (node.args[0],)))
    sites: dict[str, list[tuple[str, int]]] = {}
    for group, where in group_maps(model, traced).items():
        for node_name, offset in where:
            sites.setdefault(node_name, []).append((group, offset))
    for node_name, parts in sites.items():
        with gm.graph.inserting_after(nodes[node_name]):
            gm.graph.call_module(tap(observe(parts)), (nodes[node_name],))
    for g in prunable.values():
        with gm.graph.inserting_after(modules[g.producers[0]]):
            gm.graph.call_module(tap(measure(g.name)), (modules[g.producers[0]],))
    gm.recompile()
    return gm


def _input(x, device: torch.device, gradients: bool):
    """The batch's inputs on `device`, detached; floating tensors require gradients when the pass needs them."""
    def one(v):
        v = v.to(device).detach() if isinstance(v, torch.Tensor) else v
        return v.requires_grad_(gradients) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
    if isinstance(x, dict):
        return {k: one(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(one(v) for v in x)
    return one(x)


def collect_stats(model: nn.Module, batches: Batches, *, gradients: bool = True, loss_fn: Callable = F.cross_entropy,
                  max_batches: int | None = None, traced: GroupTrace | None = None,
                  progress: bool = False, collective: distributed.Collective | None = None) -> dict[str, ChannelStats]:
    """One pass over `batches` (eval mode): `ChannelStats` of every prunable group, from its maps and its readers.

    The model's traced graph (`traced`, from `graph.groups.trace_groups`, if the caller has it) runs with taps:
    after each of a group's maps (`group_maps`) its sums are added at once; before each reader, the reader gets its
    own view of its input (its own autograd node: its own part of ∂C/∂r).  With ``gradients=True`` the loss
    C = ``loss_fn(model(x), y)`` (a mean over the batch, as torch's losses are) is back-propagated to every reader's
    input (never into ``.grad`` of the weights), scaled by the batch size so that each example's gradient is that
    of its own loss.  The model itself gets no hooks; its train/eval mode is restored, also on an error.

    Under torchrun (or with a `collective` of several processes) every process passes its own shard of the data
    and gets the sums over all shards: the scores equal those of one process seeing every batch (float
    rounding aside).  Every process must call it.

    Raises:
        RuntimeError: called under ``torch.inference_mode()``, or a reader's input changed in place after it
            was read (the statistics would be of the changed values).
        ValueError: no batches.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("ranking needs gradients of the feature maps, but it was called under torch.inference_mode(); "
                           "call it outside (it leaves the model's weights and .grad untouched)")
    traced = trace_groups(model) if traced is None else traced
    groups = {n: g for n, g in traced.groups.items() if not g.refused}
    readers, device = _readers(groups), model_device(model)
    stats = {n: ChannelStats.empty(g.size) for n, g in groups.items()}
    seen: dict[str, tuple[torch.Tensor, int]] = {}
    positions: dict[str, int] = {}

    def read(reader):
        def own_view(x):
            view = x.view_as(x)                        # this reader's own autograd node: its own part of ∂C/∂r
            seen[reader] = (view, view._version)
            return view
        return own_view

    def observe(parts):
        def add(x):
            z = x.detach()
            for group, offset in parts:
                size = groups[group].size
                stats[group].maps.add(z[:, offset:offset + size].double().reshape(len(z), size, -1))
        return add

    def measure(group):
        def count(x):
            positions[group] = x[0, 0].numel()
        return count

    gm = _tapped(model, traced, read=read, observe=observe, measure=measure)
    with mode(model, training=False):
        for i, (x, y) in enumerate(tqdm(batches, desc="ranking", disable=not progress, leave=False)):
            if max_batches is not None and i >= max_batches:
                break
            seen.clear()
            with torch.set_grad_enabled(gradients):
                out = call(gm, _input(x, device, gradients))     # the caller's batch stays as it was
                names = list(seen)
                grads = (torch.autograd.grad(loss_fn(out, y.to(device)) * batch_size(x), [seen[n][0] for n in names],
                                             allow_unused=True) if gradients else [None] * len(names))
            for n in names:
                if seen[n][0]._version != seen[n][1]:
                    raise RuntimeError(f"the input of {n} was changed in place after {n} read it; criteria cannot "
                                       "read it: write that operation out of place (e.g. relu(inplace=False))")
            inputs = {n: (seen[n][0].detach(), torch.zeros_like(seen[n][0]) if gradients and g is None else g)
                      for n, g in zip(names, grads)}
            _add_batch(stats, groups, readers, inputs, positions)
        seen.clear()
    collective = distributed.current() if collective is None else collective
    if collective.world_size > 1:
        _sum_over_processes(stats, {n: g.size for n, g in groups.items()}, collective)
    if not any(s.examples for s in stats.values()):
        raise ValueError("no data to rank with: the batches were empty (or max_batches=0); pass at least one batch "
                         "of (inputs, targets)")
    return stats
