"""Checkers for notebooks 03 and 05: surgery by hand, a ResNet's channel groups (the loop's checker is in `loop`)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from ..graph.groups import channel_groups
from ..models.resnets import small_resnet
from ..rank.masking import masked
from ._guard import without_library
from ._verdict import Wrong, close, verdict
from .ranking import tiny_chain

__all__ = ["check_channel_groups", "check_group_readers", "check_remove_filter", "check_remove_last_filter",
           "flat_head_chain"]


def flat_head_chain(seed: int = 0) -> nn.Module:
    """Two conv-BN-ReLU blocks whose last maps (5 channels of 2x2) are flattened into a Linear, as in VGG16."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(6, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(5 * 2 * 2, 3))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3), m.running_var.uniform_(0.5, 1.5), m.bias.uniform_(-0.3, 0.3)
    return model.eval()


def _masked(model: nn.Module, bn: str, k: int) -> nn.Module:
    """A copy of `model` with channel k of the group of the BatchNorm `bn` zeroed wherever it is read
    (`rank.masking.masked`): what removing filter k computes."""
    ref = copy.deepcopy(model)
    groups = channel_groups(ref)
    group = next(g for g in groups.values() if bn in {m.module for m in g.members})
    return masked(ref, {group.name: [k]}, groups)


def _same_output(got: nn.Module, ref: nn.Module, x: torch.Tensor, what: str, hint: str) -> None:
    if not isinstance(got, nn.Module):
        raise Wrong(f"return the pruned model, not {type(got).__name__}")
    with torch.no_grad():
        try:
            out = got.eval()(x)
        except RuntimeError as err:
            raise Wrong(f"the pruned model does not run: {str(err).splitlines()[0]} ({hint})") from None
        want = ref.eval()(x)
    if not close(out, want, rtol=1e-4, atol=1e-5):
        raise Wrong(f"{what}: outputs differ from the masked model's by up to {float((out - want).abs().max()):.3g} ({hint})")


def _shapes(model: nn.Module, checks: dict[str, tuple[str, tuple]]) -> None:
    for name, (attr, shape) in checks.items():
        got = tuple(getattr(model.get_submodule(name), attr).shape)
        if got != shape:
            raise Wrong(f"{name}.{attr} has shape {got}, expected {shape}")


def check_remove_filter(remove_filter: Callable) -> bool:
    """03: ``remove_filter(model, conv, k) -> model``: filter k removed from the conv (weight and bias), its
    BatchNorm (four tensors) and the next conv's input channels; checked by shapes and against the masked model."""
    remove_filter = without_library(remove_filter)

    def check() -> None:
        x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(5))
        for conv, bn, following, k in (("0", "1", "3", 2), ("3", "4", "7", 0), ("3", "4", "7", 7)):
            model = tiny_chain(1, inplace=False)
            c = model.get_submodule(conv)
            got = remove_filter(copy.deepcopy(model), conv, k)
            n, nxt = c.out_channels - 1, model.get_submodule(following)
            _shapes(got, {conv: ("weight", (n, *c.weight.shape[1:]))})
            bias = tuple(got.get_submodule(conv).bias.shape)
            if bias != (n,):
                raise Wrong(f"{conv}.bias has shape {bias}, expected ({n},)")
            for attr in ("weight", "bias", "running_mean", "running_var"):
                shape = tuple(getattr(got.get_submodule(bn), attr).shape)
                if shape != (n,):
                    raise Wrong(f"the BatchNorm {bn}.{attr} has shape {shape}, expected ({n},): slice all four of its tensors")
            _shapes(got, {following: ("weight", (nxt.out_channels, n, *nxt.weight.shape[2:]))})
            _same_output(got, _masked(model, bn, k), x, f"filter {k} of conv {conv}",
                         "remove the same index from the filters, the BatchNorm and the next conv's input channels; "
                         "also update out_channels, in_channels and num_features")
    return verdict("removing one filter by hand", check, notebook="03", exercise="remove_filter")


def check_remove_last_filter(remove_last_filter: Callable) -> bool:
    """03: ``remove_last_filter(model, k) -> model``: filter k of the last conv removed, with its BatchNorm and the
    Linear's columns that read channel k after ``Flatten`` (channel-major: channel k owns H·W consecutive columns)."""
    remove_last_filter = without_library(remove_last_filter)

    def check() -> None:
        x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(6))
        for k in (0, 3, 4):
            model = flat_head_chain(2)
            got = remove_last_filter(copy.deepcopy(model), k)
            _shapes(got, {"4": ("weight", (4, 6, 3, 3)), "9": ("weight", (3, 16))})
            _same_output(got, _masked(model, "5", k), x, f"filter {k} of the last conv",
                         "Flatten is channel-major: channel k is columns k·H·W to (k+1)·H·W − 1 of the Linear, not "
                         "every C-th column")
    return verdict("removing a filter before the Linear", check, notebook="03", exercise="remove_last_filter")


_RESNETS = [dict(widths=(8, 16, 32), blocks=(2, 1, 3)), dict(widths=(4, 8), blocks=(1, 2)), dict(widths=(6,), blocks=(3,))]


def _producer_sets(model: nn.Module) -> set[frozenset]:
    return {frozenset(g.producers) for g in channel_groups(model).values() if not g.refused}


def check_channel_groups(groups_of: Callable) -> bool:
    """05: ``groups_of(model) -> list of sets of conv names``: for a small ResNet (`resnets.small_resnet`, any
    widths and blocks), the convs whose filters must be removed together (each residual stream's writers; each
    block's first conv alone), checked against `groups.channel_groups`."""
    groups_of = without_library(groups_of)

    def check() -> None:
        for config in _RESNETS:
            model = small_resnet(**config, num_classes=2)
            want = _producer_sets(model)
            got = {frozenset(s) for s in groups_of(model)}
            if got == want:
                continue
            missing = sorted(want - got, key=lambda g: ("features.0.0" not in g, -len(g)))[0]   # the stem's first
            hint = (" (the stem writes the first stage's stream)" if "features.0.0" in missing else
                    " (the shortcut conv writes into the same sum as its stage's blocks)" if any("shortcut" in c for c in missing)
                    else "")
            raise Wrong(f"ResNet widths {config['widths']}, blocks {config['blocks']}: expected a group "
                        f"{sorted(missing)}{hint}")
    return verdict("a ResNet's channel groups", check, notebook="05", exercise="groups_of")


def check_group_readers(readers_of: Callable) -> bool:
    """05: ``readers_of(model) -> {frozenset of writers: set of layers reading them}`` for each residual stream of a
    small ResNet: every conv (or the Linear) whose input channels are the stream's; checked against
    `groups.channel_groups`."""
    readers_of = without_library(readers_of)

    def check() -> None:
        for config in _RESNETS:
            model = small_resnet(**config, num_classes=2)
            want = {frozenset(g.producers): set(g.readers) for g in channel_groups(model).values()
                    if len(g.producers) > 1 or g.name == "features.0.0"}
            got = {frozenset(k): set(v) for k, v in readers_of(model).items()}
            for writers, readers in want.items():
                if writers not in got:
                    raise Wrong(f"ResNet widths {config['widths']}, blocks {config['blocks']}: no entry for the stream "
                                f"written by {sorted(writers)}")
                if got[writers] != readers:
                    extra, missing = sorted(got[writers] - readers), sorted(readers - got[writers])
                    hint = " (the next stage's shortcut reads the stream too)" if any("shortcut" in m for m in missing) else (
                        " (the Linear reads the last stream)" if any("classifier" in m for m in missing) else "")
                    raise Wrong(f"the stream written by {sorted(writers)[0]}...: missing {missing}, not readers "
                                f"{extra}{hint}")
    return verdict("who reads a residual stream", check, notebook="05", exercise="readers_of")
