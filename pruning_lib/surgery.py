"""Surgery: remove whole conv filters for real (structured pruning).

The idea in one sitting:

1. **Who reads each conv's output?**  `couplings.find_couplings` follows every conv's output
   through BatchNorm, activations and pooling to the next channel-mixing layer (a `Coupling`).
2. **A plan** is plain data, ``{"features.10": [3, 17]}``: conv name -> indices of the output
   filters to remove (`planning` makes one from scores).  `validate_plan` checks it completely
   before anything is touched.
3. **Slice**: `slice_layer` computes the new tensors for one conv: its weight and bias (rows), the
   BatchNorms' parameters and running statistics, and the consumer's input channels (conv:
   columns; Linear: the channel-major column blocks after flatten).
4. **Swap in**: `prune_filters` computes every new tensor first and only then assigns them, so a
   failure leaves the model untouched.

Removing filter k is *exact*: the pruned model computes the same function as the original model
with channel k set to zero where the consumer reads it.
"""

from __future__ import annotations

import copy
from typing import Callable, Mapping, Sequence

import torch
import torch.fx as fx
import torch.nn as nn

from .couplings import Coupling, find_couplings, prunable_convs, trace
from .group_surgery import prune_groups
from .planning import plan_from_widths
from .slicing import Tensors, check_indices, check_model, kept, slice_linear_columns, swap_in, unsliceable

__all__ = ["prune_filters", "slice_layer", "validate_plan", "with_widths"]


def validate_plan(model: nn.Module, plan: Mapping[str, Sequence[int]], *,
                  graph: fx.Graph | None = None) -> dict[str, tuple[Coupling, list[int]]]:
    """Check a plan against the model without changing anything.

    Returns ``{conv: (coupling, sorted removed indices)}`` for the non-empty entries.

    Raises:
        KeyError: a name that is not a module of the model.
        ValueError: not a Conv2d; non-int, duplicate, negative, out-of-range indices; every filter.
        NotImplementedError: a conv that cannot be pruned exactly (residual, concat, grouped, ...), or a
            layer on its path whose tensors cannot be sliced exactly (a reparametrisation, a mask, tensor hooks).
        TypeError: a wrapper (DataParallel, torch.compile) instead of the network itself.
    """
    check_model(model)
    if not isinstance(plan, Mapping):
        raise TypeError(f"a plan maps conv names to filter indices, e.g. {{'features.0': [3, 17]}}; got {type(plan).__name__}")
    modules = dict(model.named_modules())
    couplings = None
    checked = {}
    for name, indices in plan.items():
        if name not in modules:
            raise KeyError(f"{name!r} is not a module of {type(model).__name__}; "
                           f"prunable convs are {prunable_convs(model)}")
        conv = modules[name]
        if not isinstance(conv, nn.Conv2d):
            raise ValueError(f"{name!r} is a {type(conv).__name__}, not a Conv2d; "
                             f"prunable convs are {prunable_convs(model)}")
        removed = check_indices(name, indices, conv.out_channels)
        if not removed:
            continue
        couplings = couplings if couplings is not None else find_couplings(model, graph)
        coupling = couplings[name]
        if isinstance(coupling, str):
            raise NotImplementedError(f"cannot prune {name} exactly: {coupling}")
        for member in (coupling.conv, *coupling.batchnorms, coupling.consumer):
            reason = unsliceable(member, modules[member])
            if reason:
                raise NotImplementedError(f"cannot prune {name} exactly: {reason}")
        checked[name] = (coupling, removed)
    return checked


def slice_layer(coupling: Coupling, removed: list[int], tensor: Callable[[str, str], torch.Tensor]) -> Tensors:
    """The new tensors when filters `removed` of ``coupling.conv`` go: ``{(module, attribute): tensor}``.

    `tensor(module, attribute)` returns a tensor as it is now (weights of the layers on the path).

    1. the conv keeps the rows of the kept filters:          W[keep], b[keep]
    2. every BatchNorm on the way keeps their statistics:    γ[keep], β[keep], μ[keep], σ²[keep]
    3. the consumer keeps the matching input channels:       next conv W[:, keep], or the first
       Linear's column blocks (flatten is channel-major: columns c·S .. c·S + S − 1 belong to channel c)
    """
    weight = tensor(coupling.conv, "weight")
    keep = kept(weight.shape[0], removed, weight.device)
    new = {(coupling.conv, "weight"): weight.index_select(0, keep)}
    if tensor(coupling.conv, "bias") is not None:
        new[coupling.conv, "bias"] = tensor(coupling.conv, "bias").index_select(0, keep)
    for bn in coupling.batchnorms:
        for attr in ("weight", "bias", "running_mean", "running_var"):
            if tensor(bn, attr) is not None:
                new[bn, attr] = tensor(bn, attr).index_select(0, keep)
    w = tensor(coupling.consumer, "weight")
    new[coupling.consumer, "weight"] = (slice_linear_columns(w, keep, weight.shape[0]) if coupling.flattened
                                        else w.index_select(1, keep))
    return new


def _new_tensors(model: nn.Module, checked: Mapping[str, tuple[Coupling, list[int]]]) -> Tensors:
    """Compute every sliced tensor (nothing is assigned yet): {(module, attr): tensor}."""
    modules = dict(model.named_modules())
    new: Tensors = {}

    def current(mod: str, attr: str) -> torch.Tensor:
        return new.get((mod, attr), getattr(modules[mod], attr))

    for name, (coupling, removed) in checked.items():
        new.update(slice_layer(coupling, removed, current))
    return new


def prune_filters(model: nn.Module, plan: Mapping[str, Sequence[int]]) -> nn.Module:
    """Remove the planned output filters of each conv, in place, and fix every dependent layer.

    Args:
        model: a chain of layers (torchvision VGG / VGG-BN, an ``nn.Sequential`` of Conv2d,
            BatchNorm2d, activations, pooling, Dropout, Flatten, Linear), or any network whose
            channels are tied by residual additions, concatenation or depthwise convs: those
            go to `group_surgery.prune_groups`, which removes each channel from its whole group.
        plan: ``{conv name: [filter indices to remove]}``, names as in ``model.named_modules()``.

    Returns:
        The same ``model`` object, now smaller.  Parameters keep dtype, device and
        ``requires_grad``; modules keep their train/eval mode.  Build a new optimizer
        afterwards: the pruned parameters are new tensors.

    Raises:
        KeyError, ValueError, NotImplementedError: see `validate_plan` and
        `group_surgery.validate_group_plan`; the model is unchanged.
    """
    check_model(model)
    graph = trace(model) if _removes_anything(plan) else None   # one trace for the chain check and the groups
    try:
        checked = validate_plan(model, plan, graph=graph)
    except NotImplementedError:                 # not a chain: residual, concat, depthwise -> channel groups
        return prune_groups(model, plan, graph=graph)
    with torch.no_grad():
        new = _new_tensors(model, checked)
    swap_in(model, new)
    return model


def _removes_anything(plan) -> bool:
    """Whether the plan names any index (then the model is traced); True when it is malformed: validation explains."""
    try:
        return isinstance(plan, Mapping) and any(len(v) for v in plan.values())
    except TypeError:
        return True


def _depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def with_widths(model: nn.Module, widths: Mapping[str, int]) -> nn.Module:
    """A pruned copy of `model` whose convs keep the first ``widths[conv]`` filters (the last ones go).

    BatchNorms and consumers shrink with them (`prune_filters`); convs not named keep their width,
    and `model` is not changed.  Depthwise convs follow the convs that feed them (their widths are
    checked, not planned).  With a freshly built model this rebuilds any pruned architecture
    (random weights are fine for timing: a dense conv costs the same whatever its weights).

    Raises:
        ValueError: a width outside ``1..n``, a conv the model lacks, or widths that do not fit
            together (a depthwise conv, or two convs of one channel group, with different widths).
    """
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    planned = {name: w for name, w in widths.items() if name not in convs or not _depthwise(convs[name])}
    plan = plan_from_widths({name: m.out_channels for name, m in convs.items()}, planned)
    pruned = prune_filters(copy.deepcopy(model), plan)
    got = {name: m.out_channels for name, m in pruned.named_modules() if isinstance(m, nn.Conv2d)}
    wrong = {name: (w, got[name]) for name, w in widths.items() if got[name] != w}
    if wrong:
        raise ValueError("these widths do not fit together (asked, got): " + ", ".join(
            f"{name} {w} -> {g}" for name, (w, g) in wrong.items()) + "; depthwise convs follow the conv that feeds them")
    return pruned
