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

import warnings
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import distributed
from ..graph.groups import ChannelGroup, GroupTrace, trace_groups
from ..graph.layer_types import layer_type
from .stats import Batches, ChannelStats, Sums, collect_stats, group_maps

__all__ = ["CRITERIA", "ChannelStats", "Criterion", "Group", "Part", "Sums", "check_scores", "collect_stats",
           "group_maps", "normalize_per_layer", "rank_all", "rank_filters", "register_criterion", "taylor"]

Scores = Mapping[str, torch.Tensor]          # {group name: (size,) scores}
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


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
    """Each channel's weight norm, summed over the group's producers (a producer's rows in the dim its layer type
    says: a transposed conv's filters are dim 1 of its weight)."""
    def rows(module: nn.Module) -> torch.Tensor:
        weight = module.weight.detach().double()
        entry = layer_type(module)
        dim = entry.row_dim("weight") if entry is not None else 0
        return weight.movedim(dim, 0).flatten(1)
    return sum(rows(m).norm(p=p, dim=1).cpu() for m in group.producers)


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
