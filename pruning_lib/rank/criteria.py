"""Criteria: rank the channels of a trained network by importance, one score per channel of every group.

Molchanov et al. 2017 (arXiv 1611.06440), Sec. 2.2, compare cheap criteria with an *oracle* (the true loss
change when a filter is removed; see `oracle`).  Removing channel k of a group (`surgery`) is exact to
setting it to zero where every **reader** reads it (the next conv, or the first Linear after flatten), so every
data criterion looks at the readers' inputs r: in a chain, the map z_k after the conv's BatchNorm and
non-linearity (and its pooling), the map the next layer reads.  One statistics pass (`collect_stats`) hooks
every reader's input, so an activation module used after several convs, ``F.relu`` or ``nn.ReLU``, all give
the same scores.

The paper's criterion (`taylor`): removing filter k sets z_k to zero, and the first-order Taylor expansion of
the loss C around z_k gives the change ΔC ≈ −Σ_m ∂C/∂z_{k,m} · z_{k,m}; its absolute value, per example and
averaged over the M positions of the map, is Θ_TE (Eq. 8).  For a group the change is summed over every
reader (each reader's own part of the gradient, so a map read twice is counted where each reader reads it),
the |·| taken per example, and M is the positions of the map the group's producers make.  Every example
counts once, whatever batch it came in: the gradient is that of the example's own loss.

Every criterion is one entry of `CRITERIA` with one signature, ``score(group) -> (size,)`` over a `Group`
(its stats, producer convs and a generator); `register_criterion` adds one.  Scores are 1-D float CPU tensors,
one per channel, **higher = more important**, keyed by group name (its first producer conv).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import distributed
from ..graph.groups import ChannelGroup, channel_groups
from ..runtime import mode, model_device

__all__ = ["CRITERIA", "ChannelStats", "Criterion", "Group", "check_scores", "collect_stats", "normalize_per_layer",
           "rank_all", "rank_filters", "register_criterion", "taylor"]

Scores = Mapping[str, torch.Tensor]          # {group name: (size,) scores}
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


def _zeros() -> torch.Tensor:
    return torch.zeros(0, dtype=torch.float64)


@dataclass
class ChannelStats:
    """Per-channel sums over every reader's input, shape (size,) each (float64), and the counts they need."""

    examples: int = 0
    positions: torch.Tensor = field(default_factory=_zeros)   # values seen per channel (N x positions, all readers)
    total: torch.Tensor = field(default_factory=_zeros)       # Σ r
    total_sq: torch.Tensor = field(default_factory=_zeros)    # Σ r²
    zeros: torch.Tensor = field(default_factory=_zeros)       # how many r == 0
    taylor: torch.Tensor = field(default_factory=_zeros)      # Σ_examples |Σ_readers Σ_m ∂ℓ/∂r · r| / M


@dataclass(frozen=True)
class Group:
    """What a criterion sees of one channel group."""

    name: str
    size: int
    producers: tuple[nn.Module, ...]
    stats: ChannelStats | None
    generator: torch.Generator


@dataclass(frozen=True)
class Criterion:
    """One criterion: ``score(group) -> (size,)`` tensor, higher = more important.

    ``needs``: ``"weights"`` (no data), ``"maps"`` (a pass over the data), or ``"gradients"`` (and the loss's
    gradient).  ``normalize``: whether the L2 normalisation per group (Eq. 9) applies (random's does not).
    """

    score: Callable[[Group], torch.Tensor]
    needs: str = "maps"
    normalize: bool = True


def _norms(group: Group, p: int) -> torch.Tensor:
    return sum(conv.weight.detach().double().flatten(1).norm(p=p, dim=1).cpu() for conv in group.producers)


def _std(s: ChannelStats) -> torch.Tensor:
    return (s.total_sq / s.positions - (s.total / s.positions).square()).clamp_min(0).sqrt()


#: Every criterion by name.  Data criteria read the stats; weight norms are summed over a group's producers.
CRITERIA: dict[str, Criterion] = {
    "taylor": Criterion(lambda g: g.stats.taylor / g.stats.examples, needs="gradients"),   # Θ_TE, Eq. 8
    "mean_activation": Criterion(lambda g: g.stats.total / g.stats.positions),            # Θ_MA
    "std_activation": Criterion(lambda g: _std(g.stats)),                                 # Θ_std (population)
    "apoz": Criterion(lambda g: 1.0 - g.stats.zeros / g.stats.positions),                 # 1 − APoZ (Hu et al. 2016)
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
    """Add one batch: for each group, the sums over its readers (Taylor: summed over readers before |·|)."""
    parts: dict[str, list] = {}
    for reader, (r, grad) in inputs.items():
        for group, offset, span in readers[reader]:
            size = groups[group].size
            dz = None if grad is None else _channels(grad.double(), offset, size, span)
            parts.setdefault(group, []).append((_channels(r.double(), offset, size, span), dz))
    for group, seen in parts.items():
        s, n, size = stats[group], seen[0][0].shape[0], groups[group].size
        if s.examples == 0:
            s.positions, s.total, s.total_sq, s.zeros, s.taylor = (torch.zeros(size, dtype=torch.float64) for _ in range(5))
        s.examples += n
        for z, _ in seen:
            s.positions += z.shape[0] * z.shape[2]
            s.total += z.sum(dim=(0, 2)).cpu()
            s.total_sq += z.square().sum(dim=(0, 2)).cpu()
            s.zeros += (z == 0).sum(dim=(0, 2)).double().cpu()
        if seen[0][1] is not None:
            change = sum((dz * z).sum(dim=2) for z, dz in seen if dz is not None)    # (N, size), signed
            s.taylor += (change / positions[group]).abs().sum(dim=0).cpu()


def _sum_over_processes(stats: dict[str, ChannelStats], sizes: Mapping[str, int],
                        collective: distributed.Collective) -> None:
    """Add up every process's sums, in place, so the stats are those of one process seeing every shard.  Each sum
    (Taylor's included: its |·| is per example) adds over examples, so adding over processes is exact."""
    names = sorted(stats)
    for n in names:
        if stats[n].examples == 0:
            s = stats[n]
            s.positions, s.total, s.total_sq, s.zeros, s.taylor = (torch.zeros(sizes[n], dtype=torch.float64)
                                                                   for _ in range(5))
    flat = torch.cat([torch.cat([torch.tensor([float(stats[n].examples)], dtype=torch.float64), stats[n].positions,
                                 stats[n].total, stats[n].total_sq, stats[n].zeros, stats[n].taylor]) for n in names])
    collective.all_reduce(flat)
    offset = 0
    for n in names:
        s, size = stats[n], sizes[n]
        s.examples = int(flat[offset])
        s.positions, s.total, s.total_sq, s.zeros, s.taylor = flat[offset + 1:offset + 1 + 5 * size].view(5, size).clone()
        offset += 1 + 5 * size


def collect_stats(model: nn.Module, batches: Batches, *, gradients: bool = True, loss_fn: Callable = F.cross_entropy,
                  max_batches: int | None = None, groups: Mapping[str, ChannelGroup] | None = None,
                  progress: bool = False, collective: distributed.Collective | None = None) -> dict[str, ChannelStats]:
    """One pass over `batches` (eval mode): `ChannelStats` of every prunable group, from its readers' inputs.

    With ``gradients=True`` the loss C = ``loss_fn(model(x), y)`` (a mean over the batch, as torch's losses
    are) is back-propagated to every reader's input (never into ``.grad`` of the weights), scaled by the batch
    size so that each example's gradient is that of its own loss.  Hooks are removed and the train/eval mode
    restored, also on an error.

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
    groups = channel_groups(model) if groups is None else groups
    readers, modules, device = _readers(groups), dict(model.named_modules()), model_device(model)
    stats = {g.name: ChannelStats() for g in groups.values() if not g.refused}
    seen: dict[str, tuple[torch.Tensor, int]] = {}
    positions: dict[str, int] = {}

    def own_view(name):
        def pre_hook(module, args):
            view = args[0].view_as(args[0])            # this reader's own autograd node: its own part of ∂C/∂r
            seen[name] = (view, view._version)
            return (view, *args[1:])
        return pre_hook

    def map_size(name):
        def hook(module, args, output):
            positions[name] = output[0, 0].numel()
        return hook

    hooks = [modules[r].register_forward_pre_hook(own_view(r)) for r in readers]
    hooks += [modules[g.producers[0]].register_forward_hook(map_size(g.name)) for g in groups.values() if not g.refused]
    try:
        with mode(model, training=False):
            for i, (x, y) in enumerate(tqdm(batches, desc="ranking", disable=not progress, leave=False)):
                if max_batches is not None and i >= max_batches:
                    break
                with torch.set_grad_enabled(gradients):
                    out = model(x.to(device).detach().requires_grad_(gradients))   # the caller's batch stays as it was
                    names = list(seen)
                    grads = (torch.autograd.grad(loss_fn(out, y.to(device)) * len(x), [seen[n][0] for n in names],
                                                 allow_unused=True) if gradients else [None] * len(names))
                for n in names:
                    if seen[n][0]._version != seen[n][1]:
                        raise RuntimeError(f"the input of {n} was changed in place after {n} read it; criteria cannot "
                                           "read it: write that operation out of place (e.g. relu(inplace=False))")
                inputs = {n: (seen[n][0].detach(), torch.zeros_like(seen[n][0]) if gradients and g is None else g)
                          for n, g in zip(names, grads)}
                _add_batch(stats, groups, readers, inputs, positions)
                seen.clear()
    finally:
        for h in hooks:
            h.remove()
    collective = distributed.current() if collective is None else collective
    if collective.world_size > 1:
        _sum_over_processes(stats, {n: g.size for n, g in groups.items() if not g.refused}, collective)
    if not any(s.examples for s in stats.values()):
        raise ValueError("no data to rank with: the batches were empty (or max_batches=0); pass at least one batch "
                         "of (inputs, targets)")
    return stats


# ---------------------------------------------------------------- scores
def check_scores(criterion: str, raw: Mapping[str, torch.Tensor]) -> None:
    """Non-finite scores are an error naming the layer; all-zero Taylor scores (a constant loss) a warning."""
    for name, scores in raw.items():
        if not torch.isfinite(scores).all():
            raise ValueError(f"{criterion} scores of {name} are not finite (NaN or inf): the inputs or the loss "
                             "hold NaN/inf; check the data (and the model's outputs) before ranking")
    if criterion == "taylor" and all(float(s.abs().max()) == 0.0 for s in raw.values()):
        warnings.warn("every Taylor score is 0: the loss does not change with any feature map (a constant loss, "
                      "or a loss that ignores the model's outputs); the ranking is arbitrary", RuntimeWarning, stacklevel=3)


def normalize_per_layer(scores: Mapping[str, torch.Tensor], how: str | None = "l2") -> Scores:
    """Layer-wise L2 normalisation (Eq. 9): Θ̂ = Θ / sqrt(Σ_j Θ_j²) within each layer; None: unchanged."""
    if how is None:
        return dict(scores)
    if how != "l2":
        raise ValueError(f"normalize must be 'l2' or None, got {how!r}")
    return {n: s / s.norm() if s.norm() > 0 else s.clone() for n, s in scores.items()}


def rank_all(model: nn.Module, batches: Batches | None, criteria: Sequence[str], *, loss_fn: Callable = F.cross_entropy,
             normalize: str | None = "l2", seed: int = 0, max_batches: int | None = None,
             progress: bool = False, collective: distributed.Collective | None = None) -> dict[str, Scores]:
    """Score every prunable group's channels with several criteria in one pass over the data.

    Returns ``{criterion: {group name: (size,) float32 CPU scores}}``, higher = more important.
    """
    unknown = [c for c in criteria if c not in CRITERIA]
    if unknown:
        raise ValueError(f"unknown criterion {unknown[0]!r}; valid ones are {sorted(CRITERIA)} (and 'oracle', "
                         "through rank.oracle.oracle())")
    needs = {CRITERIA[c].needs for c in criteria}
    data = [c for c in criteria if CRITERIA[c].needs != "weights"]
    if data and batches is None:
        raise ValueError(f"criteria {data} need batches of (inputs, targets)")
    groups = channel_groups(model)
    prunable = {n: g for n, g in groups.items() if not g.refused}
    stats = (collect_stats(model, batches, gradients="gradients" in needs, loss_fn=loss_fn, max_batches=max_batches,
                           groups=groups, progress=progress, collective=collective) if data else dict.fromkeys(prunable))
    modules = dict(model.named_modules())
    result = {}
    for criterion in criteria:
        entry, generator = CRITERIA[criterion], torch.Generator().manual_seed(seed)
        raw = {n: entry.score(Group(n, g.size, tuple(modules[p] for p in g.producers), stats[n], generator))
               .detach().float().cpu() for n, g in prunable.items()}
        for n, s in raw.items():
            if s.shape != (prunable[n].size,):
                raise ValueError(f"criterion {criterion!r} gave {tuple(s.shape)} scores for {n}, which has "
                                 f"{prunable[n].size} channels")
        check_scores(criterion, raw)
        result[criterion] = normalize_per_layer(raw, normalize) if entry.normalize else raw
    return result


def rank_filters(model: nn.Module, batches: Batches | None, criterion: str, *, loss_fn: Callable = F.cross_entropy,
                 normalize: str | None = "l2", seed: int = 0, max_batches: int | None = None,
                 progress: bool = False, collective: distributed.Collective | None = None) -> Scores:
    """Score the channels of every prunable group: ``{group name: (size,) float CPU tensor}``.

    Args:
        model: a trained network (weights, ``.grad`` and train/eval mode are left unchanged).
        batches: iterable of ``(inputs, targets)``; only needed by data criteria.
        criterion: a name of `CRITERIA` ("taylor", "l1", "l2", "mean_activation", "std_activation", "apoz",
            "random", or one added with `register_criterion`).
        loss_fn: ``loss_fn(outputs, targets)``, a mean over the batch (cross-entropy by default).
        normalize: "l2" for the paper's per-layer normalisation (Eq. 9), None for raw scores.
        seed: for "random".
        collective: the processes whose shards add up (`distributed`); by default those of torchrun's process
            group when there is one, else this process alone.
    """
    return rank_all(model, batches, [criterion], loss_fn=loss_fn, normalize=normalize, seed=seed,
                    max_batches=max_batches, progress=progress, collective=collective)[criterion]
