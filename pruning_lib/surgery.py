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

import numpy as np
import torch
import torch.nn as nn

from .couplings import Coupling, find_couplings, prunable_convs, refuse_wrappers
from .planning import plan_from_widths

__all__ = ["prune_filters", "slice_layer", "validate_plan", "with_widths"]


def _check_indices(name: str, indices: Sequence[int], n: int) -> list[int]:
    """Validate one layer's indices (ints, numpy ints or an integer tensor; unique, in range, not all)."""
    if isinstance(indices, (str, bytes)) or not hasattr(indices, "__iter__"):
        raise ValueError(f"{name}: the plan must give a list of filter indices, got {indices!r}")
    idx = list(indices.tolist() if isinstance(indices, (torch.Tensor, np.ndarray)) else indices)
    for i in idx:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise ValueError(f"{name}: filter indices must be ints, got {i!r} ({type(i).__name__})")
    idx = [int(i) for i in idx]
    for i in idx:
        if not 0 <= i < n:
            raise ValueError(f"{name} has {n} filters; index {i} is out of range (valid: 0..{n - 1})")
    if len(set(idx)) != len(idx):
        dup = sorted({i for i in idx if idx.count(i) > 1})
        raise ValueError(f"{name}: duplicate filter indices {dup}")
    if len(idx) >= n:
        raise ValueError(f"{name} has {n} filters; a plan may remove at most {n - 1} of them, not all")
    return sorted(idx)


def _refuse_wrappers(model: nn.Module) -> None:
    """A wrapper instead of the network (`couplings.refuse_wrappers`), or inference mode."""
    refuse_wrappers(model)
    if torch.is_inference_mode_enabled():
        raise RuntimeError("prune_filters was called under torch.inference_mode(): the new parameters would be inference "
                           "tensors that cannot be trained; call it outside (torch.no_grad() is fine for evaluation)")


_HOW_TO_REMOVE = {
    "WeightNorm": "torch.nn.utils.remove_weight_norm(module) (or use torch.nn.utils.parametrizations.weight_norm)",
    "SpectralNorm": "torch.nn.utils.remove_spectral_norm(module)",
    "prune": "torch.nn.utils.prune.remove(module, 'weight') (it makes the mask permanent)",
}


def _unsliceable(name: str, module: nn.Module) -> str | None:
    """Why `module`'s tensors cannot be sliced exactly (a reparametrisation, a mask, tensor hooks), or None."""
    from torch.nn.utils import parametrize, prune

    for hook in module._forward_pre_hooks.values():
        kind = type(hook).__name__
        if kind in ("WeightNorm", "SpectralNorm"):
            return f"{name} has the legacy {kind} reparametrisation; remove it with {_HOW_TO_REMOVE[kind]}"
        if isinstance(hook, prune.BasePruningMethod):
            return f"{name} has a torch.nn.utils.prune mask; remove it with {_HOW_TO_REMOVE['prune']}"
    if any(n.endswith("_orig") for n, _ in module.named_parameters(recurse=False)):
        return f"{name} has a masked weight (weight_orig); remove the mask with {_HOW_TO_REMOVE['prune']}"
    if parametrize.is_parametrized(module):
        for tensor, plist in module.parametrizations.items():
            kinds = [type(p).__name__ for p in plist]
            if kinds != ["_WeightNorm"]:                 # weight_norm's (g, v) slice exactly; others keep state
                return (f"{name}.{tensor} is parametrized by {', '.join(kinds)}, whose state cannot be sliced; remove it "
                        f"with torch.nn.utils.parametrize.remove_parametrizations(module, {tensor!r})")
    for pname, p in module.named_parameters(recurse=False):
        if getattr(p, "_backward_hooks", None):
            return (f"{name}.{pname} has tensor hooks (Tensor.register_hook) that the new, smaller tensor would "
                    "lose; remove them before pruning and register them again after")
        if p.is_inference():
            return f"{name}.{pname} is an inference tensor (made under torch.inference_mode()); build the model outside it"
    return None


def validate_plan(model: nn.Module, plan: Mapping[str, Sequence[int]]) -> dict[str, tuple[Coupling, list[int]]]:
    """Check a plan against the model without changing anything.

    Returns ``{conv: (coupling, sorted removed indices)}`` for the non-empty entries.

    Raises:
        KeyError: a name that is not a module of the model.
        ValueError: not a Conv2d; non-int, duplicate, negative, out-of-range indices; every filter.
        NotImplementedError: a conv that cannot be pruned exactly (residual, concat, grouped, ...), or a
            layer on its path whose tensors cannot be sliced exactly (a reparametrisation, a mask, tensor hooks).
        TypeError: a wrapper (DataParallel, torch.compile) instead of the network itself.
    """
    _refuse_wrappers(model)
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
        removed = _check_indices(name, indices, conv.out_channels)
        if not removed:
            continue
        couplings = couplings if couplings is not None else find_couplings(model)
        coupling = couplings[name]
        if isinstance(coupling, str):
            raise NotImplementedError(f"cannot prune {name} exactly: {coupling}")
        for member in (coupling.conv, *coupling.batchnorms, coupling.consumer):
            reason = _unsliceable(member, modules[member])
            if reason:
                raise NotImplementedError(f"cannot prune {name} exactly: {reason}")
        checked[name] = (coupling, removed)
    return checked


def _kept(n: int, removed: list[int], device: torch.device) -> torch.Tensor:
    mask = torch.ones(n, dtype=torch.bool)
    mask[removed] = False
    return mask.nonzero().flatten().to(device)


def _slice_linear_columns(weight: torch.Tensor, keep: torch.Tensor, channels: int) -> torch.Tensor:
    """Keep the column blocks of `keep` channels; flatten is channel-major: column = c * S + s."""
    out_features, in_features = weight.shape
    blocks = weight.reshape(out_features, channels, in_features // channels)
    return blocks.index_select(1, keep).reshape(out_features, -1)


Tensors = dict[tuple[str, str], torch.Tensor]


def slice_layer(coupling: Coupling, removed: list[int], tensor: Callable[[str, str], torch.Tensor]) -> Tensors:
    """The new tensors when filters `removed` of ``coupling.conv`` go: ``{(module, attribute): tensor}``.

    `tensor(module, attribute)` returns a tensor as it is now (weights of the layers on the path).

    1. the conv keeps the rows of the kept filters:          W[keep], b[keep]
    2. every BatchNorm on the way keeps their statistics:    γ[keep], β[keep], μ[keep], σ²[keep]
    3. the consumer keeps the matching input channels:       next conv W[:, keep], or the first
       Linear's column blocks (flatten is channel-major: columns c·S .. c·S + S − 1 belong to channel c)
    """
    weight = tensor(coupling.conv, "weight")
    keep = _kept(weight.shape[0], removed, weight.device)
    new = {(coupling.conv, "weight"): weight.index_select(0, keep)}
    if tensor(coupling.conv, "bias") is not None:
        new[coupling.conv, "bias"] = tensor(coupling.conv, "bias").index_select(0, keep)
    for bn in coupling.batchnorms:
        for attr in ("weight", "bias", "running_mean", "running_var"):
            if tensor(bn, attr) is not None:
                new[bn, attr] = tensor(bn, attr).index_select(0, keep)
    w = tensor(coupling.consumer, "weight")
    new[coupling.consumer, "weight"] = (_slice_linear_columns(w, keep, weight.shape[0]) if coupling.flattened
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


def _swap_in(model: nn.Module, new: Mapping[tuple[str, str], torch.Tensor]) -> None:
    """Assign the sliced tensors, keeping requires_grad, and update the size attributes."""
    modules = dict(model.named_modules())
    for (mod_name, attr), tensor in new.items():
        mod = modules[mod_name]
        old = getattr(mod, attr)
        if old.dim() == 4 and old.is_contiguous(memory_format=torch.channels_last) and not old.is_contiguous():
            tensor = tensor.contiguous(memory_format=torch.channels_last)      # keep the layout it had
        if isinstance(old, nn.Parameter):
            setattr(mod, attr, nn.Parameter(tensor, requires_grad=old.requires_grad))
        else:
            setattr(mod, attr, tensor)
    for mod in modules.values():
        if isinstance(mod, nn.Conv2d):
            mod.out_channels, mod.in_channels = mod.weight.shape[0], mod.weight.shape[1]
        elif isinstance(mod, nn.BatchNorm2d) and mod.running_mean is not None:
            mod.num_features = mod.running_mean.shape[0]
        elif isinstance(mod, nn.BatchNorm2d) and mod.weight is not None:
            mod.num_features = mod.weight.shape[0]
        elif isinstance(mod, nn.Linear):
            mod.in_features = mod.weight.shape[1]


def prune_filters(model: nn.Module, plan: Mapping[str, Sequence[int]]) -> nn.Module:
    """Remove the planned output filters of each conv, in place, and fix every dependent layer.

    Args:
        model: a plain chain of layers (torchvision VGG / VGG-BN, or an ``nn.Sequential``
            of Conv2d, BatchNorm2d, activations, pooling, Dropout, Flatten, Linear).
        plan: ``{conv name: [filter indices to remove]}``, names as in ``model.named_modules()``.

    Returns:
        The same ``model`` object, now smaller.  Parameters keep dtype, device and
        ``requires_grad``; modules keep their train/eval mode.  Build a new optimizer
        afterwards: the pruned parameters are new tensors.

    Raises:
        KeyError, ValueError, NotImplementedError: see `validate_plan`; the model is unchanged.
    """
    checked = validate_plan(model, plan)
    with torch.no_grad():
        new = _new_tensors(model, checked)
    _swap_in(model, new)
    return model


def with_widths(model: nn.Module, widths: Mapping[str, int]) -> nn.Module:
    """A pruned copy of `model` whose convs keep the first ``widths[conv]`` filters (the last ones go).

    BatchNorms and consumers shrink with them (`prune_filters`); convs not named keep their width,
    and `model` is not changed.  With a freshly built model this rebuilds any pruned architecture
    (random weights are fine for timing: a dense conv costs the same whatever its weights).
    """
    current = {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    plan = plan_from_widths(current, widths)
    return prune_filters(copy.deepcopy(model), plan)
