"""Group surgery: remove channels from a whole channel group, exactly (residual networks, DenseNet, MobileNet).

`groups.channel_groups` says which channels must go together and where each group's channels sit in
every module.  Removing channel k of a group removes, all at once:

- row k of every **producer** conv writing into the group (weight and bias);
- entry k of every **BatchNorm** on the way (γ, β, running mean and variance);
- channel k of every **depthwise** conv it passes through (its row, bias and one of its ``groups``);
- the matching input column of every conv that **reads** it, or the first Linear's column block
  (flatten is channel-major), each at the offset where the group sits in that module's input.

A plan keeps the form of `surgery.prune_filters`: ``{conv: [indices]}``, naming any producer (or
depthwise conv) of a group; two convs of one group must name the same channels.  Everything is
checked, and every new tensor computed, before the model changes.

Removing channel k is *exact*: the pruned model computes what the original computes when channel k of
the group is set to zero wherever a channel-mixing layer (conv, Linear) reads it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Mapping, Sequence

import torch
import torch.fx as fx
import torch.nn as nn

from .groups import ChannelGroup, channel_groups
from .slicing import Tensors, check_indices, check_model, kept, slice_linear_columns, swap_in, unsliceable

__all__ = ["group_removals", "prune_groups", "validate_group_plan"]


def _owners(groups: Mapping[str, ChannelGroup]) -> dict[str, list[tuple[str, int, int]]]:
    """Each conv whose channels belong to groups -> [(group, offset, size)]: producers and depthwise convs."""
    owners: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    for g in groups.values():
        for m in g.members:
            if m.role in ("out", "depthwise"):
                owners[m.module].append((g.name, m.offset, g.size))
    return owners


def _prunable(groups: Mapping[str, ChannelGroup]) -> list[str]:
    return [p for g in groups.values() if not g.refused for p in g.producers]


def validate_group_plan(model: nn.Module, plan: Mapping[str, Sequence[int]],
                        groups: Mapping[str, ChannelGroup] | None = None) -> dict[str, list[int]]:
    """Check a plan against the model's channel groups without changing anything.

    Returns ``{group name: sorted channels of the group to remove}`` for the groups that lose channels.

    Raises:
        KeyError: a name that is not a module of the model.
        ValueError: not a conv of any group; bad indices; two convs of one group naming different
            channels; a plan that would empty a group.
        NotImplementedError: a group that cannot be pruned exactly (the reason names the operation and
            the module), or a member whose tensors cannot be sliced (a reparametrisation, a mask, hooks).
    """
    check_model(model)
    if not isinstance(plan, Mapping):
        raise TypeError(f"a plan maps conv names to filter indices, e.g. {{'layer1.0.conv1': [3, 17]}}; got {type(plan).__name__}")
    groups = channel_groups(model) if groups is None else groups
    modules, owners = dict(model.named_modules()), _owners(groups)
    claims: dict[str, tuple[str, list[int]]] = {}
    for name, indices in plan.items():
        if name not in modules:
            raise KeyError(f"{name!r} is not a module of {type(model).__name__}; prunable convs are {_prunable(groups)}")
        conv = modules[name]
        if not isinstance(conv, nn.Conv2d) or name not in owners:
            raise ValueError(f"{name!r} is a {type(conv).__name__} that makes no channels of a group; "
                             f"prunable convs are {_prunable(groups)}")
        removed = check_indices(name, indices, conv.out_channels)
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


def _slice_member(module: nn.Module, name: str, role: str, removed: list[int], span: int,
                  current) -> Tensors:
    """The new tensors of one module when its channels `removed` go, in the part it plays (`role`)."""
    new: Tensors = {}
    if role in ("out", "depthwise", "bn"):                  # per-channel state: rows
        n = module.out_channels if role != "bn" else module.num_features
        attrs = ("weight", "bias") if role != "bn" else ("weight", "bias", "running_mean", "running_var")
        for attr in attrs:
            t = current(name, attr)
            if t is not None:
                new[name, attr] = t.index_select(0, kept(n, removed, t.device))
    elif role == "in":                                      # a conv reading the channels: input columns
        w = current(name, "weight")
        new[name, "weight"] = w.index_select(1, kept(w.shape[1], removed, w.device))
    elif role == "linear":                                  # the first Linear after flatten: column blocks
        w = current(name, "weight")
        channels = w.shape[1] // span
        new[name, "weight"] = slice_linear_columns(w, kept(channels, removed, w.device), channels)
    else:  # pragma: no cover - channel_groups makes only these roles
        raise AssertionError(role)
    return new


def prune_groups(model: nn.Module, plan: Mapping[str, Sequence[int]], *, graph: fx.Graph | None = None) -> nn.Module:
    """Remove the planned channels from their whole channel groups, in place, exactly.

    Args:
        model: any network `torch.fx` can trace (ResNets, DenseNets, MobileNets, VGG, ...).
        plan: ``{conv name: [indices]}``; a conv stands for its whole group (see the module docstring).
        graph: the model's ``torch.fx`` trace, when the caller has it already.

    Returns:
        The same ``model``, smaller; parameters keep dtype, device and ``requires_grad``, modules their
        train/eval mode.  Build a new optimizer afterwards.

    Raises:
        KeyError, ValueError, NotImplementedError: see `validate_group_plan`; the model is unchanged.
    """
    groups = channel_groups(model, graph)
    removed = validate_group_plan(model, plan, groups)
    modules = dict(model.named_modules())
    new: Tensors = {}
    new_groups: dict[str, int] = {}

    def current(mod: str, attr: str) -> torch.Tensor | None:
        return new.get((mod, attr), getattr(modules[mod], attr))

    with torch.no_grad():
        for (name, role), (indices, span) in group_removals(groups, removed).items():
            new.update(_slice_member(modules[name], name, role, indices, span, current))
            if role == "depthwise":
                new_groups[name] = modules[name].out_channels - len(indices)
    swap_in(model, new, new_groups)
    return model
