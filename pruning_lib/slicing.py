"""The tensor work under `surgery`: checking indices, refusing what cannot be sliced, slicing rows and columns,
swapping the new tensors in.

`surgery` computes every new tensor first and only then calls `swap_in`, so a failure leaves the model untouched.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from .graph.layer_types import layer_type
from .graph.trace import refuse_wrappers

__all__ = ["Tensors", "check_indices", "check_model", "kept", "slice_blocks", "slice_columns", "swap_in", "unsliceable"]

Tensors = dict[tuple[str, str], torch.Tensor]


def check_indices(name: str, indices: Sequence[int], n: int) -> list[int]:
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


def check_model(model: nn.Module) -> None:
    """A wrapper instead of the network (`graph.trace.refuse_wrappers`), or inference mode."""
    refuse_wrappers(model)
    if torch.is_inference_mode_enabled():
        raise RuntimeError("pruning was called under torch.inference_mode(): the new parameters would be inference "
                           "tensors that cannot be trained; call it outside (torch.no_grad() is fine for evaluation)")


_HOW_TO_REMOVE = {
    "WeightNorm": "torch.nn.utils.remove_weight_norm(module) (or use torch.nn.utils.parametrizations.weight_norm)",
    "SpectralNorm": "torch.nn.utils.remove_spectral_norm(module)",
    "prune": "torch.nn.utils.prune.remove(module, 'weight') (it makes the mask permanent)",
}


def unsliceable(name: str, module: nn.Module) -> str | None:
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


def kept(n: int, removed: list[int], device: torch.device) -> torch.Tensor:
    mask = torch.ones(n, dtype=torch.bool)
    mask[removed] = False
    return mask.nonzero().flatten().to(device)


def slice_blocks(tensor: torch.Tensor, keep: torch.Tensor, span: int = 1, dim: int = 0) -> torch.Tensor:
    """Keep the channels `keep` of a tensor whose `dim` holds them in blocks of `span`: a conv's rows (dim 0) or input
    columns (dim 1), or a Linear's (O, C·span) after a channel-major flatten, where columns c·span .. c·span + span − 1
    belong to channel c."""
    shape = tensor.shape
    blocks = tensor.reshape(*shape[:dim], shape[dim] // span, span, *shape[dim + 1:])
    return blocks.index_select(dim, keep).reshape(*shape[:dim], -1, *shape[dim + 1:])


def slice_columns(weight: torch.Tensor, keep: torch.Tensor, span: int = 1) -> torch.Tensor:
    """Keep the input channels `keep` of a weight whose dim 1 holds them (`slice_blocks` along dim 1)."""
    return slice_blocks(weight, keep, span, 1)


def swap_in(model: nn.Module, new: Mapping[tuple[str, str], torch.Tensor],
            channels: Mapping[str, int] | None = None) -> None:
    """Assign the sliced tensors, keeping requires_grad and memory format, then resize every changed module.

    `channels` gives the new number of per-channel rows of the modules the group passes through (a BatchNorm,
    a depthwise conv), for their layer type's ``resize``.
    """
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
    channels = channels or {}
    for mod_name in dict.fromkeys([m for m, _ in new] + list(channels)):
        layer_type(modules[mod_name]).resize(modules[mod_name], channels.get(mod_name))
