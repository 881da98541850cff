"""Surgery: remove whole filters for real (structured pruning), from their whole channel group, exactly.

The idea in one sitting:

1. **Who goes with a filter?**  `graph.groups.channel_groups` says which channels must go together: in a chain
   a conv's filter k and the next layer's input channel k; through residual additions, concatenation and
   depthwise convs, every member of the group.
2. **A plan** is plain data, ``{"features.10": [3, 17]}``: a conv (any producer of a group) -> the indices of
   the channels to remove (`plan` makes one from scores).  `validate_plan` checks it completely first.
3. **Slice**: `slice_member` computes one module's new tensors in the part it plays in the group: a producer
   keeps the rows of the kept filters, a BatchNorm or depthwise conv on the way keeps their channels, a
   reader keeps the matching input columns (a Linear after flatten: the channel-major column blocks).
   How a module type is sliced comes from the registry of `graph.layer_types`.
4. **Swap in**: `prune_filters` computes every new tensor first and only then assigns them, so a failure
   leaves the model untouched.

Removing channel k is *exact*: the pruned model computes what the original computes when channel k of the
group is set to zero wherever a channel-mixing layer (conv, Linear) reads it.
"""

from __future__ import annotations

import copy
import os
from collections import defaultdict
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
import torch.nn as nn

from .checkpoints import CheckpointError, load_state, read_checkpoint
from .graph.groups import ChannelGroup, channel_groups
from .graph.layer_types import (DENSE, FLATTENS, MIXES, PASSES, PER_CHANNEL, channels_of, flow_of, layer_type,
                                producers)
from .plan import plan_from_widths
from .runtime import model_device
from .slicing import Tensors, check_indices, check_model, kept, slice_blocks, swap_in, unsliceable

__all__ = ["group_removals", "load_pruned", "prune_filters", "slice_member", "validate_plan", "widths_in", "with_widths"]


def _owners(groups: Mapping[str, ChannelGroup]) -> dict[str, list[tuple[str, int, int]]]:
    """Each module whose output rows belong to groups -> [(group, offset, size)]: producers and depthwise convs."""
    owners: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    for g in groups.values():
        for m in g.members:
            if m.role == "out" or (m.role == "through" and g.producers):
                owners[m.module].append((g.name, m.offset, g.size))
    return owners


def _prunable(groups: Mapping[str, ChannelGroup]) -> list[str]:
    return [p for g in groups.values() if not g.refused for p in g.producers]


def validate_plan(model: nn.Module, plan: Mapping[str, Sequence[int]],
                  groups: Mapping[str, ChannelGroup] | None = None) -> dict[str, list[int]]:
    """Check a plan against the model's channel groups without changing anything.

    Returns ``{group name: sorted channels of the group to remove}`` for the groups that lose channels.

    Raises:
        KeyError: a name that is not a module of the model.
        ValueError: not a conv of any group; bad indices; two convs of one group naming different
            channels; a plan that would empty a group.
        NotImplementedError: a group that cannot be pruned exactly (the reason names the operation and
            the module), or a member whose tensors cannot be sliced (a reparametrisation, a mask, hooks).
        TypeError: a wrapper (DataParallel, torch.compile) instead of the network, or a plan that is not a mapping.
    """
    _check_entries(model, plan)
    if not any(len(v) for v in plan.values()):
        return {}
    return _removals(model, plan, channel_groups(model) if groups is None else groups)


def _check_entries(model: nn.Module, plan: Mapping[str, Sequence[int]]) -> None:
    """Names and indices, before anything is traced."""
    check_model(model)
    if not isinstance(plan, Mapping):
        raise TypeError(f"a plan maps conv names to filter indices, e.g. {{'features.0': [3, 17]}}; got {type(plan).__name__}")
    modules = dict(model.named_modules())
    makers = list(producers(model))
    for name, indices in plan.items():
        if name not in modules:
            raise KeyError(f"{name!r} is not a module of {type(model).__name__}; the layers that make channels are "
                           f"{makers}")
        if layer_type(modules[name]) is None:
            raise ValueError(f"{name!r} is a {type(modules[name]).__name__}, a layer type the library does not know: "
                             "register it with graph.layer_types.register_layer_type")
        if not _plannable(modules[name]):
            raise ValueError(f"{name!r} is a {type(modules[name]).__name__}, not a layer that makes channels; the "
                             f"layers that make channels are {makers}")
        check_indices(name, indices, channels_of(modules[name]))


def _plannable(module: nn.Module) -> bool:
    """A module a plan may name: a registered layer with per-channel rows (one that makes channels, a depthwise
    conv, or one whose refusal `_removals` explains), not an activation, pooling or flatten."""
    entry = layer_type(module)
    return entry is not None and bool(entry.rows) and flow_of(module) not in (PASSES, FLATTENS)


def _removals(model: nn.Module, plan: Mapping[str, Sequence[int]],
              groups: Mapping[str, ChannelGroup]) -> dict[str, list[int]]:
    """The plan (names and indices checked) as ``{group: channels}``, checked against the groups."""
    modules = dict(model.named_modules())
    owners = _owners(groups)
    claims: dict[str, tuple[str, list[int]]] = {}
    for name, indices in plan.items():
        if name not in owners:
            raise ValueError(f"{name!r} makes no channels of a prunable group; prunable convs are {_prunable(groups)}")
        removed = check_indices(name, indices, channels_of(modules[name]))
        for group, offset, size in owners[name]:
            ks = [i - offset for i in removed if offset <= i < offset + size]
            if group in claims and claims[group][1] != ks:
                raise ValueError(f"{claims[group][0]} and {name} are in the same channel group ({group}) but name different "
                                 f"channels ({claims[group][1]} vs {ks}); name the group's channels once, with one of them")
            claims[group] = (name, ks)
    removals = {}
    for group, (name, ks) in claims.items():
        if not ks:
            continue
        g = groups[group]
        if g.refused:
            raise NotImplementedError(f"cannot prune {name} exactly: its channel group {group} is refused: {g.refused}")
        if len(ks) >= g.size:
            raise ValueError(f"{name}: its channel group {group} has {g.size} channels; a plan may remove at most "
                             f"{g.size - 1} of them, not all")
        for member in dict.fromkeys(m.module for m in g.members):
            reason = unsliceable(member, modules[member])
            if reason:
                raise NotImplementedError(f"cannot prune {name} exactly: {reason}")
        removals[group] = ks
    return removals


def group_removals(groups: Mapping[str, ChannelGroup], removed: Mapping[str, Sequence[int]]
                   ) -> dict[tuple[str, str], tuple[list[int], int]]:
    """The group channels to remove as module channels: ``{(module, role): (indices, span)}``.

    Channel k of a group is channel ``offset + k`` of each member (column block ``offset + k`` of a Linear).
    """
    out: dict[tuple[str, str], tuple[set[int], int]] = {}
    for group, ks in removed.items():
        for m in groups[group].members:
            indices, _ = out.setdefault((m.module, m.role), (set(), m.span))
            indices.update(m.offset + k for k in ks)
    return {key: (sorted(idx), span) for key, (idx, span) in out.items()}


def slice_member(module: nn.Module, name: str, role: str, removed: list[int], span: int,
                 current: Callable[[str, str], torch.Tensor | None]) -> Tensors:
    """The new tensors of one module when its channels `removed` go, in the part it plays (`role`).

    - a producer (``"out"``) or a layer on the way (``"through"``) keeps the rows of the kept channels:
      a conv's W[keep] and b[keep]; a BatchNorm's γ, β, μ, σ²; a depthwise conv's W[keep], b[keep];
    - a reader (``"in"``) keeps the matching input columns: the next conv's W[:, keep], or the Linear's
      column blocks after flatten.

    `current(module, attribute)` is the tensor as it is now (or as already sliced by another group).
    """
    entry = layer_type(module)
    attrs = entry.rows if role in ("out", "through") else (entry.columns,)
    new: Tensors = {}
    for attr in attrs:
        t = current(name, attr)
        if t is None:
            continue
        dim = entry.column_dim if role == "in" else entry.row_dim(attr)
        new[name, attr] = slice_blocks(t, kept(t.shape[dim] // span, removed, t.device), span, dim)
    return new


def prune_filters(model: nn.Module, plan: Mapping[str, Sequence[int]],
                  groups: Mapping[str, ChannelGroup] | None = None) -> nn.Module:
    """Remove the planned channels from their whole channel groups, in place, exactly.

    Args:
        model: any network `torch.fx` can trace (VGG, ResNets, DenseNets, MobileNets, ...).
        plan: ``{conv name: [indices]}``; a conv stands for its whole group (the group's name is its first
            producer; any producer may be named, and two producers of one group must name the same channels).
        groups: the model's channel groups (`graph.groups.channel_groups`) when the caller has them, so that the
            model is not traced again; they must be those of the model as it is.

    Returns:
        The same ``model``, smaller; parameters keep dtype, device and ``requires_grad``, modules their
        train/eval mode.  Build a new optimizer afterwards: the pruned parameters are new tensors.

    Raises:
        KeyError, ValueError, NotImplementedError, TypeError: see `validate_plan`; the model is unchanged.
    """
    _check_entries(model, plan)                               # names and indices first, without tracing
    if not any(len(v) for v in plan.values()):
        return model
    groups = channel_groups(model) if groups is None else groups
    removed = _removals(model, plan, groups)
    if not removed:
        return model
    modules = dict(model.named_modules())
    new: Tensors = {}
    channels: dict[str, int] = {}

    def current(mod: str, attr: str) -> torch.Tensor | None:
        return new.get((mod, attr), getattr(modules[mod], attr))

    with torch.no_grad():
        for (name, role), (indices, span) in group_removals(groups, removed).items():
            new.update(slice_member(modules[name], name, role, indices, span, current))
            if role == "through":
                channels[name] = channels_of(modules[name]) - len(indices) * span
    swap_in(model, new, channels)
    return model




def with_widths(model: nn.Module, widths: Mapping[str, int]) -> nn.Module:
    """A pruned copy of `model` whose convs keep the first ``widths[conv]`` filters (the last ones go).

    Every member of each group shrinks with it (`prune_filters`); convs not named keep their width, and
    `model` is not changed.  Depthwise convs follow the convs that feed them (their widths are checked, not
    planned).  With a freshly built model this rebuilds any pruned architecture (random weights are fine
    for timing: a dense conv costs the same whatever its weights).

    Raises:
        ValueError: a width outside ``1..n``, a conv the model lacks, or widths that do not fit together
            (a depthwise conv, or two convs of one channel group, with different widths).
    """
    makers = producers(model)
    planned = {name: w for name, w in widths.items() if name in makers or not _has_rows(model, name)}
    plan = plan_from_widths({name: channels_of(m) for name, m in makers.items()}, planned)
    pruned = prune_filters(copy.deepcopy(model), plan)
    got = {name: channels_of(m) for name, m in pruned.named_modules() if _has_rows(pruned, name)}
    wrong = {name: (w, got[name]) for name, w in widths.items() if got[name] != w}
    if wrong:
        raise ValueError("these widths do not fit together (asked, got): " + ", ".join(
            f"{name} {w} -> {g}" for name, (w, g) in wrong.items()) + "; depthwise convs follow the conv that feeds them")
    return pruned


def _has_rows(model: nn.Module, name: str) -> bool:
    module = dict(model.named_modules()).get(name)
    entry = layer_type(module) if module is not None else None
    return entry is not None and bool(entry.rows) and flow_of(module) in (PER_CHANNEL, MIXES, DENSE)


def widths_in(state: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, int]:
    """The widths a state dict's tensors give the producers of `model`'s prunable groups (its architecture),
    ``{name: channels}``."""
    prunable = {p for g in channel_groups(model).values() if not g.refused for p in g.producers}
    out = {}
    for name, m in producers(model).items():
        if name not in prunable:
            continue
        entry = layer_type(m)
        attr = next((a for a in entry.rows if f"{name}.{a}" in state), None)
        if attr is not None:
            out[name] = int(state[f"{name}.{attr}"].shape[entry.row_dim(attr)])
    return out


def load_pruned(path: str | os.PathLike, model: nn.Module) -> tuple[nn.Module, dict]:
    """Rebuild a pruned model saved by `checkpoints.save_pruned` (or `save_checkpoint`).

    Args:
        path: the checkpoint (read with ``torch.load(weights_only=True)``: it cannot run code).
        model: a freshly built model of the *unpruned* architecture (e.g. ``small_vgg(...)``);
            it is left unchanged.

    Returns:
        ``(pruned copy of model with the saved weights, meta dict)``.
    """
    path = Path(path).expanduser()
    if next(model.parameters(), None) is None:
        raise ValueError(f"{type(model).__name__} has no parameters: pass a freshly built model of the unpruned "
                         "architecture that was pruned (e.g. small_vgg(...)), not an empty module")
    payload = read_checkpoint(path, map_location=model_device(model))
    if not isinstance(payload.get("state_dict"), Mapping):
        raise CheckpointError(f"{path} holds no weights: it was not written by save_pruned or save_checkpoint")
    widths = widths_in(payload["state_dict"], model)
    try:
        pruned = with_widths(model, widths)
    except ValueError as err:
        raise ValueError(f"{path}: {err}; build the same unpruned architecture that was pruned") from None
    load_state(pruned, payload["state_dict"], path)
    return pruned, payload["meta"]
