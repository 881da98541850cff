"""Checkers for notebooks 03 and 05: surgery by hand, the Prune–Train–Repeat loop, a ResNet's channel groups."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from ..graph.groups import group_widths
from ..graph.groups import channel_groups
from ..recover.iterative import PruningSchedule, prune_train_repeat
from ..models.resnets import small_resnet
from ._verdict import Wrong, close, verdict
from .ranking import tiny_chain

__all__ = ["check_channel_groups", "check_group_readers", "check_prune_train_repeat", "check_remove_filter",
           "check_remove_last_filter", "flat_head_chain"]


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
    """`model` with channel k zeroed after the BatchNorm `bn` (then ReLU(0) = 0: what removing filter k computes)."""
    ref = copy.deepcopy(model)
    with torch.no_grad():
        ref.get_submodule(bn).weight[k] = 0
        ref.get_submodule(bn).bias[k] = 0
    return ref


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
    return verdict("removing one filter by hand", check)


def check_remove_last_filter(remove_last_filter: Callable) -> bool:
    """03: ``remove_last_filter(model, k) -> model``: filter k of the last conv removed, with its BatchNorm and the
    Linear's columns that read channel k after ``Flatten`` (channel-major: channel k owns H·W consecutive columns)."""
    def check() -> None:
        x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(6))
        for k in (0, 3, 4):
            model = flat_head_chain(2)
            got = remove_last_filter(copy.deepcopy(model), k)
            _shapes(got, {"4": ("weight", (4, 6, 3, 3)), "9": ("weight", (3, 16))})
            _same_output(got, _masked(model, "5", k), x, f"filter {k} of the last conv",
                         "Flatten is channel-major: channel k is columns k·H·W to (k+1)·H·W − 1 of the Linear, not "
                         "every C-th column")
    return verdict("removing a filter before the Linear", check)


def _ptr_setup(seed: int):
    model = tiny_chain(seed, inplace=False)
    gen = torch.Generator().manual_seed(seed)
    batches = [(torch.randn(8, 1, 8, 8, generator=gen), torch.randint(0, 3, (8,), generator=gen)) for _ in range(3)]
    return model, batches


def check_prune_train_repeat(loop: Callable) -> bool:
    """03: ``loop(model, train_batches, val_batches, *, iterations, filters_per_iteration, finetune_steps, lr)
    -> (model, widths)``, where ``widths`` is ``graph.groups.group_widths`` after each iteration: Taylor scores from the
    first 2 training batches (normalised per layer), the globally lowest `filters_per_iteration` removed (at
    least one filter left in every conv), then ``train.fit`` for `finetune_steps`; repeated.  Checked against
    `iterative.prune_train_repeat` on a tiny model."""
    def check() -> None:
        for seed, iterations, k in ((0, 3, 4), (1, 2, 6)):
            model, batches = _ptr_setup(seed)
            schedule = PruningSchedule(criterion="taylor", filters_per_iteration=k, finetune_steps=0, rank_batches=2,
                                       target_fraction=iterations * k / 19, lr=1e-3)
            _, history = prune_train_repeat(model, batches, batches, schedule, input_shape=(1, 8, 8), progress=False)
            want = [{c: int(r[f"filters:{c}"]) for c in group_widths(model)} for _, r in history.iloc[1:].iterrows()]
            got_model, got = loop(copy.deepcopy(model), batches, batches, iterations=iterations,
                                  filters_per_iteration=k, finetune_steps=0, lr=1e-3)
            got = [dict(w) for w in got]
            if len(got) != len(want):
                raise Wrong(f"{len(got)} widths returned for {iterations} iterations: one per iteration")
            for i, (g, w) in enumerate(zip(got, want), start=1):
                if g != w:
                    raise Wrong(f"model {seed}, iteration {i}: widths {g}, expected {w} (rank the current, already "
                                "pruned model again in every iteration, normalised per layer, with one global threshold)")
            if group_widths(got_model) != want[-1]:
                raise Wrong("the returned model does not have the widths of the last iteration")
        model, batches = _ptr_setup(0)
        trained, _ = loop(copy.deepcopy(model), batches, batches, iterations=1, filters_per_iteration=4,
                          finetune_steps=3, lr=1e-2)
        untrained, _ = loop(copy.deepcopy(model), batches, batches, iterations=1, filters_per_iteration=4,
                            finetune_steps=0, lr=1e-2)
        if all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), untrained.state_dict().values())):
            raise Wrong("with finetune_steps=3 the weights are those of finetune_steps=0: fine-tune after each prune")
    return verdict("Prune–Train–Repeat by hand", check)


_RESNETS = [dict(widths=(8, 16, 32), blocks=(2, 1, 3)), dict(widths=(4, 8), blocks=(1, 2)), dict(widths=(6,), blocks=(3,))]


def _producer_sets(model: nn.Module) -> set[frozenset]:
    return {frozenset(g.producers) for g in channel_groups(model).values() if not g.refused}


def check_channel_groups(groups_of: Callable) -> bool:
    """05: ``groups_of(model) -> list of sets of conv names``: for a small ResNet (`resnets.small_resnet`, any
    widths and blocks), the convs whose filters must be removed together (each residual stream's writers; each
    block's first conv alone), checked against `groups.channel_groups`."""
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
    return verdict("a ResNet's channel groups", check)


def check_group_readers(readers_of: Callable) -> bool:
    """05: ``readers_of(model) -> {frozenset of writers: set of layers reading them}`` for each residual stream of a
    small ResNet: every conv (or the Linear) whose input channels are the stream's; checked against
    `groups.channel_groups`."""
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
    return verdict("who reads a residual stream", check)
