"""Criteria for channel groups: every channel of a group scored as one unit, the unit surgery removes.

Removing channel k of a group (`group_surgery`) is exact to setting it to zero where every **reader**
reads it: each conv that takes the group's channels as input (at the group's offset there) and the first
Linear (a column block per channel).  So the data criteria look at the readers' inputs r:

- **taylor**: the first-order change of the loss C when channel k is zeroed at every reader,
  ΔC ≈ −Σ_readers Σ_m ∂C/∂r_{k,m} · r_{k,m}, with |·| per example, averaged over examples (Eq. 8's
  principle, summed over the positions m of every reader, as a loss change is).  Each reader gets its
  own view of its input, so ∂C/∂r is that reader's part of the gradient only: a map read by a conv
  and also carried on by a residual branch is counted at the conv, and again only where the branch's
  readers read it, never twice.  On a chain (one reader) it is the chain's Taylor criterion up to the
  constant M, which the per-layer normalisation removes.
- **mean_activation**, **std_activation**, **apoz**: statistics of channel k over every position where
  a reader reads it.
- **l1**, **l2**: the norms of the group's producer filters, summed over producers; **random**.

`group_oracle` measures what these estimate: the loss change when channel k is zeroed at every reader.
Scores are keyed by group name (its first producer), so `planning.plan_from_scores` turns them into a
plan that `surgery.prune_filters` carries out; per-group normalisation, floors and `multiple_of` blocks
then work per group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .criteria import check_scores, normalize_per_layer
from .groups import ChannelGroup, channel_groups
from .runtime import mode, model_device

__all__ = ["GROUP_CRITERIA", "GroupStats", "collect_group_stats", "group_oracle", "rank_groups"]

Scores = dict[str, torch.Tensor]
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
_ZEROS = lambda: torch.zeros(0, dtype=torch.float64)  # noqa: E731


@dataclass
class GroupStats:
    """Per-channel sums over every reader's input, shape (size,) each (float64)."""

    examples: int = 0
    positions: torch.Tensor = field(default_factory=_ZEROS)   # values seen per channel (N x positions, all readers)
    total: torch.Tensor = field(default_factory=_ZEROS)
    total_sq: torch.Tensor = field(default_factory=_ZEROS)
    zeros: torch.Tensor = field(default_factory=_ZEROS)
    taylor: torch.Tensor = field(default_factory=_ZEROS)


def _readers(groups: Mapping[str, ChannelGroup]) -> dict[str, list[tuple[str, int, int]]]:
    """reader module -> [(group, offset, span)] for the prunable groups."""
    out: dict[str, list[tuple[str, int, int]]] = {}
    for g in groups.values():
        if not g.refused:
            for m in g.members:
                if m.role in ("in", "linear"):
                    out.setdefault(m.module, []).append((g.name, m.offset, m.span))
    return out


def _channels(r: torch.Tensor, offset: int, size: int, span: int) -> torch.Tensor:
    """A reader's input as (N, size, positions) for the group's channels: a conv's maps or a Linear's blocks."""
    if r.dim() == 2:                                    # a Linear: channel-major column blocks of `span`
        r = r.reshape(r.shape[0], -1, span)
    return r[:, offset:offset + size].reshape(r.shape[0], size, -1)


def collect_group_stats(model: nn.Module, batches: Batches, *, gradients: bool = True,
                        loss_fn: Callable = F.cross_entropy, max_batches: int | None = None,
                        groups: Mapping[str, ChannelGroup] | None = None, progress: bool = False) -> dict[str, GroupStats]:
    """One pass over `batches` (eval mode): `GroupStats` of every prunable group, from its readers' inputs."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError("ranking needs gradients, but it was called under torch.inference_mode(); call it outside")
    groups = channel_groups(model) if groups is None else groups
    readers, modules, device = _readers(groups), dict(model.named_modules()), model_device(model)
    stats = {g.name: GroupStats() for g in groups.values() if not g.refused}
    seen: dict[str, torch.Tensor] = {}

    def own_view(name):
        def pre_hook(module, args):
            seen[name] = args[0].view_as(args[0])      # this reader's own autograd node: its own part of ∂C/∂r
            return (seen[name], *args[1:])
        return pre_hook

    hooks = [modules[r].register_forward_pre_hook(own_view(r)) for r in readers]
    try:
        with mode(model, training=False):
            for i, (x, y) in enumerate(tqdm(batches, desc="ranking groups", disable=not progress, leave=False)):
                if max_batches is not None and i >= max_batches:
                    break
                with torch.set_grad_enabled(gradients):
                    out = model(x.to(device).detach().requires_grad_(gradients))   # the caller's batch stays as it was
                    names = list(seen)
                    grads = torch.autograd.grad(loss_fn(out, y.to(device)), [seen[n] for n in names],
                                                allow_unused=True) if gradients else [None] * len(names)
                _accumulate(groups, readers, stats, {n: (seen[n].detach(), g) for n, g in zip(names, grads)})
                seen.clear()
    finally:
        for h in hooks:
            h.remove()
    if not any(s.examples for s in stats.values()):
        raise ValueError("no data to rank with: the batches were empty (or max_batches=0)")
    return stats


def _accumulate(groups, readers, stats, inputs) -> None:
    """Add one batch: for each group, the sums over its readers (Taylor: summed over readers before |·|)."""
    per_group: dict[str, list] = {}
    for reader, (r, grad) in inputs.items():
        for group, offset, span in readers[reader]:
            size = groups[group].size
            z = _channels(r.double(), offset, size, span)
            dz = None if grad is None else _channels(grad.double(), offset, size, span)
            per_group.setdefault(group, []).append((z, dz))
    for group, parts in per_group.items():
        s, n, size = stats[group], parts[0][0].shape[0], groups[group].size
        if s.examples == 0:
            s.positions, s.total, s.total_sq, s.zeros, s.taylor = (torch.zeros(size, dtype=torch.float64) for _ in range(5))
        s.examples += n
        for z, _ in parts:
            s.positions += z.shape[0] * z.shape[2]
            s.total += z.sum(dim=(0, 2)).cpu()
            s.total_sq += z.square().sum(dim=(0, 2)).cpu()
            s.zeros += (z == 0).sum(dim=(0, 2)).double().cpu()
        if parts[0][1] is not None:
            change = sum((dz * z).sum(dim=2) if dz is not None else torch.zeros_like(z[:, :, 0]) for z, dz in parts)
            s.taylor += change.abs().sum(dim=0).cpu()     # |Σ_readers Σ_m ∂C/∂r · r| per example, summed over examples


def _norms(model: nn.Module, group: ChannelGroup, p: int) -> torch.Tensor:
    modules = dict(model.named_modules())
    return sum(modules[c].weight.detach().double().flatten(1).norm(p=p, dim=1).cpu() for c in group.producers)


#: Every group criterion: ``score(model, group, stats, generator) -> (size,)``, higher = more important.
GROUP_CRITERIA: dict[str, Callable] = {
    "taylor": lambda m, g, s, gen: s.taylor / s.examples,
    "mean_activation": lambda m, g, s, gen: s.total / s.positions,
    "std_activation": lambda m, g, s, gen: (s.total_sq / s.positions - (s.total / s.positions).square()).clamp_min(0).sqrt(),
    "apoz": lambda m, g, s, gen: 1.0 - s.zeros / s.positions,
    "l1": lambda m, g, s, gen: _norms(m, g, 1),
    "l2": lambda m, g, s, gen: _norms(m, g, 2),
    "random": lambda m, g, s, gen: torch.rand(g.size, generator=gen, dtype=torch.float64),
}
_DATA = ("taylor", "mean_activation", "std_activation", "apoz")


def rank_groups(model: nn.Module, batches: Batches | None, criterion: str, *, loss_fn: Callable = F.cross_entropy,
                normalize: str | None = "l2", seed: int = 0, max_batches: int | None = None,
                progress: bool = False) -> Scores:
    """Score the channels of every prunable group: ``{group name: (size,) float CPU tensor}``.

    Like `criteria.rank_filters`, for networks with residual additions, concatenation and depthwise
    convs: the keys are group names (`groups.channel_groups`), which plans may use as conv names.
    """
    if criterion not in GROUP_CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; valid ones are {sorted(GROUP_CRITERIA)}")
    groups = channel_groups(model)
    if criterion in _DATA:
        if batches is None:
            raise ValueError(f"{criterion} needs batches of (inputs, targets)")
        stats = collect_group_stats(model, batches, gradients=criterion == "taylor", loss_fn=loss_fn,
                                    max_batches=max_batches, groups=groups, progress=progress)
    else:
        stats = {g.name: None for g in groups.values() if not g.refused}
    generator = torch.Generator().manual_seed(seed)
    raw = {name: GROUP_CRITERIA[criterion](model, groups[name], s, generator).float() for name, s in stats.items()}
    check_scores(criterion, raw)
    return raw if criterion == "random" else normalize_per_layer(raw, normalize)


def group_oracle(model: nn.Module, batches: Batches, *, loss_fn: Callable = F.cross_entropy,
                 max_batches: int | None = None, only: Sequence[str] | None = None, progress: bool = False) -> Scores:
    """|ΔC| when channel k of a group is zeroed at every reader (what removing it does), per group channel.

    One forward pass per channel and batch: for small networks, or `only` a few groups.
    """
    groups = channel_groups(model)
    readers, modules, device = _readers(groups), dict(model.named_modules()), model_device(model)
    data = [b for i, b in enumerate(batches) if max_batches is None or i < max_batches]
    names = [g.name for g in groups.values() if not g.refused and (only is None or g.name in only)]
    zero: dict[str, list[int]] = {}

    def masking(reader):
        def pre_hook(module, args):
            columns = zero.get(reader)
            if not columns:
                return None
            x = args[0].clone()
            x[:, columns] = 0
            return (x, *args[1:])
        return pre_hook

    def loss() -> float:
        return sum(float(loss_fn(model(x.to(device)), y.to(device))) * len(y) for x, y in data) / sum(len(y) for _, y in data)

    hooks = [modules[r].register_forward_pre_hook(masking(r)) for r in readers]
    result = {}
    try:
        with mode(model, training=False), torch.no_grad():
            base = loss()
            bar = tqdm(total=sum(groups[n].size for n in names), desc="group oracle", disable=not progress, leave=False)
            for name in names:
                deltas = torch.zeros(groups[name].size, dtype=torch.float64)
                for k in range(groups[name].size):
                    zero.clear()
                    for m in groups[name].members:
                        if m.role in ("in", "linear"):
                            zero.setdefault(m.module, []).extend(range((m.offset + k) * m.span, (m.offset + k + 1) * m.span))
                    deltas[k] = loss() - base
                    bar.update()
                result[name] = deltas.abs().float()
            bar.close()
    finally:
        zero.clear()
        for h in hooks:
            h.remove()
    return result
