"""Channels zeroed where they are read: what removing them computes, with nothing removed.

Removing channel k of a group (`surgery`) is exact to setting it to zero wherever a **reader** reads it: the
input channel k of the next conv, or the column block k of the first Linear after flatten (channel-major, ``span``
columns per channel).  `zeroed_where_read` does exactly that, with forward pre-hooks on the readers, for as long
as its ``with`` lasts; `masked` wraps a network so that every call of it does.  This is the one masking function:
the oracle, notebook 05's masked ResNet and the exercises' references all use it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import torch
import torch.nn as nn

from ..graph.groups import ChannelGroup, channel_groups, group_of

__all__ = ["Masked", "masked", "zeroed_where_read"]

Plan = Mapping[str, Sequence[int]]          # {group (or any of its producers): [channel indices]}


def _columns(groups: Mapping[str, ChannelGroup], plan: Plan) -> dict[str, list[int]]:
    """reader -> the input channels (a Linear: the columns of their blocks) that `plan` removes, checked."""
    owner = group_of(groups)
    out: dict[str, list[int]] = {}
    for name, channels in plan.items():
        if name not in owner:
            raise ValueError(f"{name!r} is not a producer of any channel group; valid names: {sorted(owner)}")
        group = groups[owner[name]]
        if group.refused:
            raise ValueError(f"group {group.name} cannot be masked like a removal: {group.refused}")
        bad = [k for k in channels if not 0 <= int(k) < group.size]
        if bad:
            raise ValueError(f"group {group.name} has {group.size} channels; index {bad[0]} is out of range")
        for m in group.members:
            if m.role == "in":
                out.setdefault(m.module, []).extend(
                    c for k in channels for c in range((m.offset + int(k)) * m.span, (m.offset + int(k) + 1) * m.span))
    return out


@contextmanager
def zeroed_where_read(model: nn.Module, plan: Plan, groups: Mapping[str, ChannelGroup] | None = None) -> Iterator[None]:
    """While inside, every reader of a planned group reads the planned channels as zeros (a clone of its input).

    Args:
        model: the network; its weights are untouched, the hooks are removed on leaving (also on an error).
        plan: ``{group or producer: [channel, ...]}``, read at every forward call: a caller may change it between
            calls (the oracle zeroes one channel after another); an empty plan zeroes nothing.
        groups: `graph.groups.channel_groups(model)`, if the caller has them.

    Raises:
        ValueError: a name that is no producer, a refused group or a channel out of range (at the forward call).
    """
    groups = channel_groups(model) if groups is None else groups
    modules = dict(model.named_modules())
    readers = {m.module for g in groups.values() if not g.refused for m in g.members if m.role == "in"}

    def pre_hook(reader: str):
        def zero(module, args):
            columns = _columns(groups, plan).get(reader)
            if not columns:
                return None
            x = args[0].clone()
            x[:, columns] = 0
            return (x, *args[1:])
        return zero

    hooks = [modules[r].register_forward_pre_hook(pre_hook(r)) for r in sorted(readers)]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


class Masked(nn.Module):
    """`model` with the channels of `plan` zeroed wherever they are read, at every call: the pruned network's
    function, with nothing removed (see `zeroed_where_read`)."""

    def __init__(self, model: nn.Module, plan: Plan, groups: Mapping[str, ChannelGroup] | None = None) -> None:
        super().__init__()
        self.model = model
        self.plan = {name: [int(k) for k in channels] for name, channels in plan.items()}
        self.groups = dict(channel_groups(model) if groups is None else groups)
        _columns(self.groups, self.plan)                       # a wrong plan fails here, not at the first call

    def forward(self, *args, **kwargs) -> torch.Tensor:
        with zeroed_where_read(self.model, self.plan, self.groups):
            return self.model(*args, **kwargs)


def masked(model: nn.Module, plan: Plan, groups: Mapping[str, ChannelGroup] | None = None) -> Masked:
    """`model` (not copied, not changed) wrapped so that every call zeroes the planned channels where they are read."""
    return Masked(model, plan, groups)
