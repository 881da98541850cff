"""Surgery: remove whole conv filters for real (structured pruning).

The idea in one sitting:

1. **Who reads each conv's output?**  `find_couplings` traces the model with
   ``torch.fx`` and follows every ``Conv2d``'s output through the layers that act
   on each channel separately (BatchNorm2d, activations, pooling, Dropout,
   Flatten) to the layer that *mixes* channels: the next conv, or the first
   Linear after the last conv.  Anything else (a residual ``add``, ``cat``, a
   grouped conv, ...) makes that conv unprunable, with the reason recorded.
2. **A plan** is plain data, ``{"features.10": [3, 17]}``: conv name -> indices
   of the output filters to remove.  `validate_plan` checks it completely
   before anything is touched.
3. **Apply it**: `prune_filters` slices, in one pass per layer, the conv's
   weight and bias (rows), the BatchNorms' parameters and running statistics,
   and the consumer's input channels (conv: columns; Linear: the channel-major
   column blocks after flatten).  All new tensors are computed first and only
   then swapped in, so a failure leaves the model untouched.

Removing filter k is *exact*: the pruned model computes the same function as
the original model with channel k set to zero where the consumer reads it.
"""

from __future__ import annotations

import copy
import operator
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

Plan = dict[str, list[int]]

# Modules that act on each channel separately (so a removed channel stays "removed").
ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus,
)
_SPATIAL = (
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
    nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.Identity,
)
_FUNCTIONAL_ACTIVATIONS = {
    torch.relu, F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.mish,
    torch.sigmoid, torch.tanh, F.hardswish, F.hardtanh,
}
_FUNCTIONAL_SPATIAL = {
    F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.dropout,
}
_METHOD_ACTIVATIONS = {"relu", "relu_", "sigmoid", "tanh"}


@dataclass(frozen=True)
class Coupling:
    """How one conv's output channels reach the next channel-mixing layer.

    Attributes:
        conv: name of the conv whose filters would be removed.
        batchnorms: BatchNorm2d layers on the way (their per-channel state is sliced).
        capture: the module whose output is the post-activation map *z* (after BN
            and the non-linearity) that ranking criteria look at; ``None`` when the
            non-linearity is a function rather than a module.
        consumer: name of the next conv or Linear, whose input channels are sliced.
        flattened: True when the consumer is a Linear reading the flattened map.
    """

    conv: str
    batchnorms: tuple[str, ...]
    capture: str | None
    consumer: str
    flattened: bool


def _describe(node: fx.Node, modules: Mapping[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"{node.target} ({type(modules[node.target]).__name__})"
    if node.op == "call_function":
        names = {operator.add: "residual addition (+)", operator.mul: "multiplication (*)",
                 torch.add: "residual addition (torch.add)", torch.cat: "concatenation (torch.cat)"}
        return names.get(node.target, getattr(node.target, "__name__", str(node.target)))
    return f"{node.op} {node.target}"


def _is_flatten(node: fx.Node, modules: Mapping[str, nn.Module]) -> bool:
    if node.op == "call_module":
        m = modules[node.target]
        return isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1
    if node.target is torch.flatten or (node.op == "call_method" and node.target == "flatten"):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return start == 1 and end == -1
    return False


def _step_kind(node: fx.Node, modules: Mapping[str, nn.Module]) -> str:
    """Classify a layer on a conv's output path: bn, activation, spatial, flatten, conv, linear or other."""
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, nn.BatchNorm2d):
            return "bn"
        if isinstance(m, ACTIVATIONS) or (isinstance(m, nn.PReLU) and m.num_parameters == 1):
            return "activation"
        if isinstance(m, _SPATIAL):
            return "spatial"
        if isinstance(m, nn.Conv2d):
            return "conv" if m.groups == 1 else "other"
        if isinstance(m, nn.Linear):
            return "linear"
    if _is_flatten(node, modules):
        return "flatten"
    if node.op == "call_function" and node.target in _FUNCTIONAL_ACTIVATIONS:
        return "functional_activation"
    if node.op == "call_method" and node.target in _METHOD_ACTIVATIONS:
        return "functional_activation"
    if node.op == "call_function" and node.target in _FUNCTIONAL_SPATIAL:
        return "spatial"
    return "other"


def _readers(node: fx.Node) -> list[fx.Node]:
    """Nodes that read `node`'s values (``x.size()`` only reads the shape)."""
    return [u for u in node.users if not (u.op == "call_method" and u.target == "size")]


def _follow(conv_node: fx.Node, modules: Mapping[str, nn.Module]) -> Coupling | str:
    """Walk from a conv to its consumer; return the Coupling, or why it can't be pruned."""
    name = conv_node.target
    if modules[name].groups != 1:
        return f"{name} is a grouped/depthwise conv (groups={modules[name].groups})"
    batchnorms, capture, leading, flattened = [], name, True, False
    node = conv_node
    while True:
        readers = _readers(node)
        if len(readers) != 1:
            what = ", ".join(_describe(r, modules) for r in readers) or "nothing"
            return f"the output of {name} is read by {len(readers)} layers ({what}): a branch or residual connection"
        user = readers[0]
        if user.op == "output":
            return f"the output of {name} is the model's output"
        if not user.args or user.args[0] is not node:
            return f"the output of {name} is combined by {_describe(user, modules)}"
        kind = _step_kind(user, modules)
        if kind == "conv" and not flattened:
            return Coupling(name, tuple(batchnorms), capture, user.target, False)
        if kind == "linear" and flattened:
            if modules[user.target].in_features % modules[name].out_channels:
                return (f"{user.target} has {modules[user.target].in_features} inputs, not a multiple of "
                        f"the {modules[name].out_channels} channels of {name} flattened into it")
            return Coupling(name, tuple(batchnorms), capture, user.target, True)
        if kind == "bn" and not flattened:
            batchnorms.append(user.target)
            capture = user.target if leading and capture is not None else capture
        elif kind == "activation":
            capture = user.target if leading and capture is not None else capture
        elif kind == "functional_activation":
            capture = None if leading else capture
        elif kind == "spatial" and not flattened:
            leading = False
        elif kind == "flatten" and not flattened:
            leading, flattened = False, True
        else:
            return f"the output of {name} reaches {_describe(user, modules)}, which couples channels"
        node = user


def trace(model: nn.Module) -> fx.Graph:
    """The model's data flow as a ``torch.fx`` graph (leaf modules from torch.nn stay whole).

    Raises:
        NotImplementedError: if ``torch.fx`` cannot trace the model.
    """
    tracer = fx.Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as e:  # fx raises many kinds of errors on dynamic models
        raise NotImplementedError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(e).__name__}: {e}); "
            "surgery supports plain chains such as torchvision's VGG") from e
    finally:
        # fx keeps the tracer in a reference cycle; without this it would keep the model
        # (hundreds of MB for VGG16) alive until Python's cycle collector happens to run
        tracer.__dict__.clear()
    return graph


def find_couplings(model: nn.Module) -> dict[str, Coupling | str]:
    """Trace `model` and map every Conv2d name to its `Coupling` (or the reason it can't be pruned).

    Raises:
        NotImplementedError: if ``torch.fx`` cannot trace the model.
    """
    graph = trace(model)
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    result: dict[str, Coupling | str] = {}
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], nn.Conv2d):
            result[node.target] = (f"{node.target} is called {calls[node.target]} times (shared weights)"
                                   if calls[node.target] > 1 else _follow(node, modules))
    for name, c in list(result.items()):
        if isinstance(c, Coupling):
            shared = [m for m in (*c.batchnorms, c.consumer) if calls.get(m, 0) > 1]
            if shared:
                result[name] = f"{shared[0]}, which reads {name}, is called more than once (shared weights)"
    return result


def prunable_convs(model: nn.Module) -> list[str]:
    """Names of the convs whose filters `prune_filters` can remove exactly, in forward order."""
    return [name for name, c in find_couplings(model).items() if isinstance(c, Coupling)]


def filters_per_layer(model: nn.Module) -> dict[str, int]:
    """Number of output filters of every prunable conv, e.g. ``{"features.0": 64, ...}``."""
    modules = dict(model.named_modules())
    return {name: modules[name].out_channels for name in prunable_convs(model)}


def _check_indices(name: str, indices: Sequence[int], n: int) -> list[int]:
    """Validate one layer's indices (ints, unique, in range, not all)."""
    idx = list(indices.tolist() if isinstance(indices, torch.Tensor) else indices)
    for i in idx:
        if isinstance(i, bool) or not isinstance(i, int):
            raise ValueError(f"{name}: filter indices must be ints, got {i!r} ({type(i).__name__})")
        if not 0 <= i < n:
            raise ValueError(f"{name} has {n} filters; index {i} is out of range (valid: 0..{n - 1})")
    if len(set(idx)) != len(idx):
        dup = sorted({i for i in idx if idx.count(i) > 1})
        raise ValueError(f"{name}: duplicate filter indices {dup}")
    if len(idx) >= n:
        raise ValueError(f"{name} has {n} filters; a plan may remove at most {n - 1} of them, not all")
    return sorted(idx)


def validate_plan(model: nn.Module, plan: Mapping[str, Sequence[int]]) -> dict[str, tuple[Coupling, list[int]]]:
    """Check a plan against the model without changing anything.

    Returns ``{conv: (coupling, sorted removed indices)}`` for the non-empty entries.

    Raises:
        KeyError: a name that is not a module of the model.
        ValueError: not a Conv2d; non-int, duplicate, negative, out-of-range indices; every filter.
        NotImplementedError: a conv that cannot be pruned exactly (residual, concat, grouped, ...).
    """
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


def _new_tensors(model: nn.Module, checked: Mapping[str, tuple[Coupling, list[int]]]) -> dict:
    """Compute every sliced tensor (nothing is assigned yet): {(module, attr): tensor}."""
    modules = dict(model.named_modules())
    new: dict[tuple[str, str], torch.Tensor] = {}

    def current(mod: str, attr: str) -> torch.Tensor:
        return new.get((mod, attr), getattr(modules[mod], attr))

    for name, (c, removed) in checked.items():
        conv = modules[name]
        keep = _kept(conv.out_channels, removed, conv.weight.device)
        new[name, "weight"] = current(name, "weight").index_select(0, keep)
        if conv.bias is not None:
            new[name, "bias"] = conv.bias.index_select(0, keep)
        for bn_name in c.batchnorms:
            for attr in ("weight", "bias", "running_mean", "running_var"):
                if getattr(modules[bn_name], attr) is not None:
                    new[bn_name, attr] = getattr(modules[bn_name], attr).index_select(0, keep)
        w = current(c.consumer, "weight")
        new[c.consumer, "weight"] = (_slice_linear_columns(w, keep, conv.out_channels) if c.flattened
                                     else w.index_select(1, keep))
    return new


def _swap_in(model: nn.Module, new: Mapping[tuple[str, str], torch.Tensor]) -> None:
    """Assign the sliced tensors, keeping requires_grad, and update the size attributes."""
    modules = dict(model.named_modules())
    for (mod_name, attr), tensor in new.items():
        mod = modules[mod_name]
        old = getattr(mod, attr)
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


def _removal_blocks(scores: torch.Tensor, multiple_of: int) -> list[tuple[float, list[int]]]:
    """A layer's filters from least to most important, in blocks that keep its width a multiple of `multiple_of`.

    The first block takes ``C % multiple_of`` filters (if any), the others `multiple_of` each;
    a block's score is the mean score of its filters.
    """
    order = torch.sort(scores.detach().float().cpu(), stable=True).indices.tolist()
    first = len(order) % multiple_of or multiple_of
    cuts = [0, *range(first, len(order) + 1, multiple_of)]
    return [(float(scores[order[a:b]].float().mean()), order[a:b]) for a, b in zip(cuts, cuts[1:])]


def plan_from_scores(
    scores: Mapping[str, torch.Tensor],
    num_filters: int | None = None,
    *,
    fraction: float | None = None,
    min_keep: int = 1,
    multiple_of: int = 1,
) -> Plan:
    """Select the globally lowest-scored filters, keeping at least `min_keep` per layer.

    Args:
        scores: ``{conv name: (C,) scores}``, higher = more important (normalise per layer
            first when comparing layers, as the paper does).
        num_filters: how many filters to remove in total; or
        fraction: the fraction of all filters to remove (rounded to the nearest count).
        min_keep: the floor: no layer keeps fewer filters than this.
        multiple_of: remove filters in blocks so every layer keeps a multiple of this many
            (8 or 16 suit CPU vector units); then at most `num_filters` are removed.

    Returns:
        A plan ``{conv name: sorted indices}`` with an entry for every layer (maybe empty).
    """
    total = sum(len(s) for s in scores.values())
    if (num_filters is None) == (fraction is None):
        raise ValueError("give exactly one of num_filters or fraction")
    if fraction is not None:
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"fraction must be in [0, 1), got {fraction}")
        num_filters = round(fraction * total)
    if min_keep < 1 or multiple_of < 1:
        raise ValueError(f"min_keep and multiple_of must be >= 1 (no layer is emptied), got {min_keep}, {multiple_of}")
    capacity = sum(max(len(s) - min_keep, 0) for s in scores.values())
    if not 0 <= num_filters <= capacity:
        raise ValueError(f"cannot remove {num_filters} filters: {total} in all, at most {capacity} "
                         f"with a floor of {min_keep} per layer")
    names = list(scores)
    blocks = [(score, i, idx) for i, n in enumerate(names) for score, idx in _removal_blocks(scores[n], multiple_of)]
    left = {n: len(scores[n]) for n in names}
    plan: Plan = {n: [] for n in names}
    for _, i, idx in sorted(blocks, key=lambda b: b[0]):  # sorted() is stable: ties keep layer order
        name = names[i]
        if len(idx) <= num_filters and left[name] - len(idx) >= min_keep:
            plan[name] += idx
            left[name] -= len(idx)
            num_filters -= len(idx)
    return {n: sorted(v) for n, v in plan.items()}


_FORMAT = "pruning_lib.pruned/1"


def save_pruned(model: nn.Module, path: str | os.PathLike, *, meta: Mapping | None = None) -> Path:
    """Save a (pruned) model's widths and weights as plain tensors and ints (no pickled code).

    `meta` must hold plain types (str, numbers, lists, dicts).  The file is written
    to a temporary name first and then renamed, so an interrupted save never leaves
    a broken file.  Restore it with `load_pruned` and a freshly built, unpruned model.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    widths = {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    payload = {"format": _FORMAT, "widths": widths, "state_dict": model.state_dict(), "meta": dict(meta or {})}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_pruned(path: str | os.PathLike, model: nn.Module) -> tuple[nn.Module, dict]:
    """Rebuild a pruned model saved by `save_pruned`.

    Args:
        path: the checkpoint (loaded with ``torch.load(weights_only=True)``: it cannot run code).
        model: a freshly built model of the *unpruned* architecture (e.g. ``small_vgg(...)``);
            it is left unchanged.

    Returns:
        ``(pruned copy of model with the saved weights, meta dict)``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no pruned checkpoint at {path}; save one with save_pruned(model, path)")
    device = next(model.parameters()).device
    ckpt = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != _FORMAT:
        raise ValueError(f"{path} was not written by save_pruned (format {_FORMAT!r} expected)")
    modules = dict(model.named_modules())
    plan = {}
    for name, width in ckpt["widths"].items():
        if not isinstance(modules.get(name), nn.Conv2d):
            raise ValueError(f"{path} has a conv {name!r} that the given {type(model).__name__} lacks: "
                             "build the same unpruned architecture that was pruned")
        if width > modules[name].out_channels:
            raise ValueError(f"{path}: {name} has {width} filters, more than the {modules[name].out_channels} "
                             "of the given model; build the same unpruned architecture that was pruned")
        plan[name] = list(range(width, modules[name].out_channels))
    pruned = prune_filters(copy.deepcopy(model), plan)
    pruned.load_state_dict(ckpt["state_dict"])
    return pruned, ckpt["meta"]
