"""Criteria: rank the channels of a trained network by importance, one score per channel of every group.

Molchanov et al. 2017 (arXiv 1611.06440), Sec. 2.2, compare cheap criteria with an *oracle* (the true loss
change when a filter is removed; see `oracle`).  Each criterion here is computed where its paper defines it:

- **The activation criteria** (Θ_MA, the mean of the map; Θ_std, its standard deviation; APoZ, Hu et al. 2016,
  the share of zeros of the ReLU's output) look at the producer's **map** z_k: the tensor at the end of its
  per-channel chain (after the BatchNorm and the activation, before anything that mixes positions: pooling,
  flatten, a conv), whatever module or function computes it (`group_maps`).  In a chain that is the one map
  after the conv's BN and ReLU.  A residual group's channels exist wherever its per-channel chain is read: the
  stem's map and each block's output after its addition and activation, before pooling; the statistics are over
  all of them, value by value.  The map before a depthwise conv counts (the depthwise conv mixes positions).
- **Taylor** (Θ_TE, Eq. 8, the paper's criterion) looks at what the **readers** read.  Removing channel k of a
  group (`surgery`) is exact to setting it to zero where every reader reads it (the next conv, or the first Linear
  after flatten; `masking`), so its first-order change of the loss C is ΔC ≈ −Σ_readers Σ_m ∂C/∂r_{k,m} · r_{k,m}:
  each reader's own part of the gradient (a map read twice is counted where each reader reads it, never again
  through a residual branch), the |·| taken per example, divided by the M positions of the map the group's
  producers make.  In a chain the sum over what the next layer reads equals the sum over the map z_k itself
  (max pooling passes the gradient to the maxima, average pooling is linear): exactly the paper's formula.
  Every example counts once, whatever batch it came in: the gradient is that of the example's own loss.
- **At the readers** (``mean_activation_at_readers``, ``std_activation_at_readers``, ``apoz_at_readers``): the
  same statistics over what the readers read (after max pooling: 1.4–4× the map's mean; after a global average
  pool APoZ is 0 or 1 per example).  Not the papers' criteria, kept under their own names because they ranked
  better against the oracle in notebook 02 (both are in its Table 1).

One statistics pass (`collect_stats`) runs the model's traced graph with observer nodes ("taps") inserted after
every map and before every reader, so an activation module used after several convs, ``F.relu`` or ``nn.ReLU``
give the same scores, and a batch split does not change them.

Every criterion is one entry of `CRITERIA` with one signature, ``score(group) -> (size,)`` over a `Group`: its
name and size, its statistics, its **parts** (producers, BatchNorms and other per-channel layers, readers, each
with the module) and a generator; `register_criterion` adds one (BatchNorm-scale, network slimming, is
``lambda g: sum(g.rows(p, p.module.weight).detach().abs() for p in g.batchnorms)``).  Scores are 1-D float CPU
tensors, one per channel, **higher = more important**, keyed by group name (its first producer conv).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

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

__all__ = ["CRITERIA", "ChannelStats", "Criterion", "Group", "Part", "Sums", "check_scores", "collect_stats",
           "group_maps", "normalize_per_layer", "rank_all", "rank_filters", "register_criterion", "taylor"]

Scores = Mapping[str, torch.Tensor]          # {group name: (size,) scores}
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def taylor(z: torch.Tensor, dz: torch.Tensor) -> torch.Tensor:
    """The Taylor criterion of one map (Eq. 8): Θ_TE(z_k) = |1/M Σ_m ∂C/∂z_{k,m} · z_{k,m}|, per example.

    Args:
        z: the feature maps, (N, C, H, W); M = H·W positions per map.
        dz: ∂C/∂z, each example's loss's gradient with respect to them, same shape.

    Returns:
        (N, C): one value per example and filter; a filter's score is their mean over examples.
        The |·| is taken per example, *before* averaging: gradients of opposite sign on different
        examples must not cancel.
    """
    return (dz * z).mean(dim=(2, 3)).abs()


# ---------------------------------------------------------------- what a criterion sees
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


@dataclass(frozen=True)
class Part:
    """One module's part in a group (`graph.groups.Member` with the module itself).

    ``role``: ``"out"`` (a producer), ``"through"`` (a per-channel layer: a BatchNorm, a depthwise conv), ``"in"``
    (a reader).  The group's channel k is the module's channel ``offset + k`` (a Linear's column block).
    """

    name: str
    module: nn.Module
    role: str
    offset: int = 0
    span: int = 1


@dataclass(frozen=True)
class Group:
    """What a criterion sees of one channel group: its statistics (None for a weight criterion), its producer
    modules, all its parts, and a generator (for random draws)."""

    name: str
    size: int
    producers: tuple[nn.Module, ...]
    stats: ChannelStats | None
    generator: torch.Generator
    parts: tuple[Part, ...] = ()

    @property
    def batchnorms(self) -> tuple[Part, ...]:
        """The group's BatchNorms (after each producer, or after a concatenation, at the group's offset)."""
        return tuple(p for p in self.parts if isinstance(p.module, _BATCHNORMS))

    @property
    def readers(self) -> tuple[Part, ...]:
        return tuple(p for p in self.parts if p.role == "in")

    def rows(self, part: Part, tensor: torch.Tensor) -> torch.Tensor:
        """The group's rows of a per-channel tensor of `part` (a BatchNorm's weight, a conv's filters): (size, ...)."""
        return tensor[part.offset:part.offset + self.size]


@dataclass(frozen=True)
class Criterion:
    """One criterion: ``score(group) -> (size,)`` tensor, higher = more important.

    ``needs``: ``"weights"`` (no data), ``"maps"`` (a pass over the data), or ``"gradients"`` (and the loss's
    gradient; all-zero scores then mean a loss that ignores the network, and warn).  ``normalize``: whether the L2
    normalisation per group (Eq. 9) applies, in pruning and in Table 1 (random's does not).
    """

    score: Callable[[Group], torch.Tensor]
    needs: str = "maps"
    normalize: bool = True


def _norms(group: Group, p: int) -> torch.Tensor:
    return sum(conv.weight.detach().double().flatten(1).norm(p=p, dim=1).cpu() for conv in group.producers)


#: Every criterion by name.  Weight norms are summed over a group's producers.
CRITERIA: dict[str, Criterion] = {
    "taylor": Criterion(lambda g: g.stats.taylor / g.stats.examples, needs="gradients"),   # Θ_TE, Eq. 8
    "mean_activation": Criterion(lambda g: g.stats.maps.mean()),                         # Θ_MA on the maps
    "std_activation": Criterion(lambda g: g.stats.maps.std()),                           # Θ_std on the maps
    "apoz": Criterion(lambda g: 1.0 - g.stats.maps.zero_share()),                        # 1 − APoZ (Hu et al. 2016)
    "mean_activation_at_readers": Criterion(lambda g: g.stats.read.mean()),              # the same three over
    "std_activation_at_readers": Criterion(lambda g: g.stats.read.std()),                # what the readers read
    "apoz_at_readers": Criterion(lambda g: 1.0 - g.stats.read.zero_share()),
    "l1": Criterion(lambda g: _norms(g, 1), needs="weights"),                            # Σ|W_k|
    "l2": Criterion(lambda g: _norms(g, 2), needs="weights"),                            # sqrt(Σ W_k²)
    # uniform in [0, 1): the floor every criterion must beat; never normalised per group, which would favour
    # narrow groups, so pruning by it picks filters uniformly from the whole network
    "random": Criterion(lambda g: torch.rand(g.size, generator=g.generator, dtype=torch.float64),
                        needs="weights", normalize=False),
}
NEEDS = ("weights", "maps", "gradients")


def register_criterion(name: str, score: Callable[[Group], torch.Tensor], *, needs: str = "maps",
                       normalize: bool = True) -> None:
    """Add a criterion: ``score(group)`` returns one value per channel of ``group`` (see `Group`), higher = keep."""
    if needs not in NEEDS:
        raise ValueError(f"needs must be one of {NEEDS}, got {needs!r}")
    if not callable(score):
        raise TypeError(f"score must be a function of a Group, got {score!r}")
    CRITERIA[name] = Criterion(score, needs, normalize)


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


# ---------------------------------------------------------------- scores
def check_scores(criterion: str, raw: Mapping[str, torch.Tensor]) -> None:
    """Non-finite scores are an error naming the layer; all-zero scores of a gradient criterion (a constant loss) a
    warning."""
    for name, scores in raw.items():
        if not torch.isfinite(scores).all():
            raise ValueError(f"{criterion} scores of {name} are not finite (NaN or inf): the inputs or the loss "
                             "hold NaN/inf; check the data (and the model's outputs) before ranking")
    entry = CRITERIA.get(criterion)
    if entry is not None and entry.needs == "gradients" and all(float(s.abs().max()) == 0.0 for s in raw.values()):
        warnings.warn(f"every {criterion[:1].upper() + criterion[1:]} score is 0: the loss does not change with any "
                      "feature map (a constant loss, or a loss that ignores the model's outputs); the ranking is "
                      "arbitrary", RuntimeWarning, stacklevel=3)


def normalize_per_layer(scores: Mapping[str, torch.Tensor], how: str | None = "l2") -> Scores:
    """Layer-wise L2 normalisation (Eq. 9): Θ̂ = Θ / sqrt(Σ_j Θ_j²) within each layer; None: unchanged."""
    if how is None:
        return dict(scores)
    if how != "l2":
        raise ValueError(f"normalize must be 'l2' or None, got {how!r}")
    return {n: s / s.norm() if s.norm() > 0 else s.clone() for n, s in scores.items()}


def _group(g: ChannelGroup, modules: Mapping[str, nn.Module], stats: ChannelStats | None,
           generator: torch.Generator) -> Group:
    parts = tuple(Part(m.module, modules[m.module], m.role, m.offset, m.span) for m in g.members)
    return Group(g.name, g.size, tuple(modules[p] for p in g.producers), stats, generator, parts)


def rank_all(model: nn.Module, batches: Batches | None, criteria: Sequence[str], *, loss_fn: Callable = F.cross_entropy,
             normalize: str | None = "l2", seed: int = 0, max_batches: int | None = None,
             progress: bool = False, collective: distributed.Collective | None = None,
             traced: GroupTrace | None = None) -> dict[str, Scores]:
    """Score every prunable group's channels with several criteria in one pass over the data.

    Returns ``{criterion: {group name: (size,) float32 CPU scores}}``, higher = more important; each criterion's
    entry says whether the per-group normalisation applies to it (random's does not).  `traced` is the model's
    analysis (`graph.groups.trace_groups`) when the caller has it: then the model is not traced again.
    """
    unknown = [c for c in criteria if c not in CRITERIA]
    if unknown:
        raise ValueError(f"unknown criterion {unknown[0]!r}; valid ones are {sorted(CRITERIA)} (and 'oracle', "
                         "through rank.oracle.oracle())")
    needs = {CRITERIA[c].needs for c in criteria}
    data = [c for c in criteria if CRITERIA[c].needs != "weights"]
    if data and batches is None:
        raise ValueError(f"criteria {data} need batches of (inputs, targets)")
    traced = trace_groups(model) if traced is None else traced
    prunable = {n: g for n, g in traced.groups.items() if not g.refused}
    stats = (collect_stats(model, batches, gradients="gradients" in needs, loss_fn=loss_fn, max_batches=max_batches,
                           traced=traced, progress=progress, collective=collective) if data else dict.fromkeys(prunable))
    modules = dict(model.named_modules())
    result = {}
    for criterion in criteria:
        entry, generator = CRITERIA[criterion], torch.Generator().manual_seed(seed)
        raw = {n: entry.score(_group(g, modules, stats[n], generator)).detach().float().cpu()
               for n, g in prunable.items()}
        for n, s in raw.items():
            if s.shape != (prunable[n].size,):
                raise ValueError(f"criterion {criterion!r} gave {tuple(s.shape)} scores for {n}, which has "
                                 f"{prunable[n].size} channels")
        check_scores(criterion, raw)
        result[criterion] = normalize_per_layer(raw, normalize) if entry.normalize else raw
    return result


def rank_filters(model: nn.Module, batches: Batches | None, criterion: str, *, loss_fn: Callable = F.cross_entropy,
                 normalize: str | None = "l2", seed: int = 0, max_batches: int | None = None,
                 progress: bool = False, collective: distributed.Collective | None = None,
                 traced: GroupTrace | None = None) -> Scores:
    """Score the channels of every prunable group: ``{group name: (size,) float CPU tensor}``.

    Args:
        model: a trained network (weights, ``.grad``, hooks and train/eval mode are left unchanged).
        batches: iterable of ``(inputs, targets)``; only needed by data criteria.
        criterion: a name of `CRITERIA` ("taylor", "l1", "l2", "mean_activation", "std_activation", "apoz",
            their "..._at_readers" forms, "random", or one added with `register_criterion`).
        loss_fn: ``loss_fn(outputs, targets)``, a mean over the batch (cross-entropy by default).
        normalize: "l2" for the paper's per-layer normalisation (Eq. 9), None for raw scores.
        seed: for "random".
        collective: the processes whose shards add up (`distributed`); by default those of torchrun's process
            group when there is one, else this process alone.
        traced: the model's analysis (`graph.groups.trace_groups`), when the caller has one.
    """
    return rank_all(model, batches, [criterion], loss_fn=loss_fn, normalize=normalize, seed=seed,
                    max_batches=max_batches, progress=progress, collective=collective, traced=traced)[criterion]
