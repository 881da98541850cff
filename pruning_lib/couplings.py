"""Couplings: who reads each conv's output, found from the model's real data flow (``torch.fx``).

`find_couplings` traces the model and follows every ``Conv2d``'s output through the layers that act
on each channel separately (BatchNorm2d, activations, pooling, Dropout, Flatten) to the layer that
*mixes* channels: the next conv, or the first Linear after the last conv.  That path is a
`Coupling`; surgery slices exactly the layers on it.  Anything else (a residual ``add``, ``cat``, a
grouped conv, a shared module, ...) makes that conv unprunable, and the reason is recorded.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.fx as fx
import torch.nn as nn

from .channel_ops import (ACTIVATIONS, FUNCTIONAL_ACTIVATIONS, FUNCTIONAL_SPATIAL, METHOD_ACTIVATIONS, SPATIAL,
                          is_flatten)

__all__ = ["ACTIVATIONS", "Coupling", "filters_per_layer", "find_couplings", "prunable_convs", "refuse_wrappers", "trace"]

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


def _step_kind(node: fx.Node, modules: Mapping[str, nn.Module]) -> str:
    """Classify a layer on a conv's output path: bn, activation, spatial, flatten, conv, linear or other."""
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, nn.BatchNorm2d):
            return "bn"
        if isinstance(m, ACTIVATIONS) or (isinstance(m, nn.PReLU) and m.num_parameters == 1):
            return "activation"
        if isinstance(m, SPATIAL):
            return "spatial"
        if isinstance(m, nn.Conv2d):
            return "conv" if m.groups == 1 else "other"
        if isinstance(m, nn.Linear):
            return "linear"
    if is_flatten(node, modules):
        return "flatten"
    if node.op == "call_function" and node.target in FUNCTIONAL_ACTIVATIONS:
        return "functional_activation"
    if node.op == "call_method" and node.target in METHOD_ACTIVATIONS:
        return "functional_activation"
    if node.op == "call_function" and node.target in FUNCTIONAL_SPATIAL:
        return "spatial"
    return "other"


def _readers(node: fx.Node) -> list[fx.Node]:
    """Nodes that read `node`'s values (``x.size()`` only reads the shape)."""
    return [u for u in node.users if not (u.op == "call_method" and u.target == "size")]


def _follow(conv_node: fx.Node, modules: Mapping[str, nn.Module]) -> Coupling | str:
    """Walk from a conv to its consumer; return the Coupling, or why it can't be pruned."""
    name = conv_node.target
    conv = modules[name]
    if conv.groups != 1:
        kind = "a depthwise conv" if conv.groups == conv.in_channels == conv.out_channels else "a grouped conv"
        return f"{name} is {kind} (groups={conv.groups}): its filters are tied to its input channels"
    batchnorms, capture, leading, flattened = [], name, True, False
    node = conv_node
    while True:
        readers = _readers(node)
        in_place = [r for r in readers if r.op == "call_method" and str(r.target).endswith("_")
                    and not str(r.target).endswith("__") and str(r.target) not in METHOD_ACTIVATIONS]
        if in_place:
            return (f"the output of {name} is changed in place by Tensor.{in_place[0].target}, which the surgery cannot "
                    f"follow; write it out of place (x = x.{str(in_place[0].target)[:-1]}(...))")
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
        elif kind == "other" and user.op == "call_module" and isinstance(modules[user.target], nn.Conv2d):
            g = modules[user.target]
            what = "a depthwise conv" if g.groups == g.in_channels == g.out_channels else "a grouped conv"
            return (f"the output of {name} reaches {user.target}, {what} (groups={g.groups}), whose channels must shrink "
                    f"together with {name}'s: channel groups are not supported")
        else:
            return f"the output of {name} reaches {_describe(user, modules)}, which couples channels"
        node = user


def refuse_wrappers(model: nn.Module) -> None:
    """Wrappers whose module tree is not the network's: raise TypeError naming the module to prune instead."""
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        raise TypeError(f"the model is wrapped in {type(model).__name__}: prune model.module, then wrap it again")
    if type(model).__name__ == "OptimizedModule" and hasattr(model, "_orig_mod"):
        raise TypeError("the model is compiled (torch.compile): prune model._orig_mod, then compile the pruned model again")


def _where(error: BaseException) -> str:
    """ ", at file:line `source`" for the innermost frame of the model's own code (not torch's) in `error`."""
    import traceback

    frames = [f for f in traceback.extract_tb(error.__traceback__) if "/torch/" not in f.filename.replace("\\", "/")]
    if not frames:
        return ""
    f = frames[-1]
    return f", at {f.filename}:{f.lineno} `{(f.line or '').strip()}`"


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
            f"cannot trace {type(model).__name__} with torch.fx ({type(e).__name__}: {e}){_where(e)}; make forward "
            "traceable: no Python `if`/`for` on tensor values (use torch.where, or move the branch into a submodule "
            "that is not pruned and keep it whole with a custom fx.Tracer.is_leaf_module)") from e
    finally:
        # fx keeps the tracer in a reference cycle; without this it would keep the model
        # (hundreds of MB for VGG16) alive until Python's cycle collector happens to run
        tracer.__dict__.clear()
    return graph


def find_couplings(model: nn.Module, graph: fx.Graph | None = None) -> dict[str, Coupling | str]:
    """Trace `model` (or read `graph`, its trace) and map every Conv2d name to its `Coupling` (or why it can't be pruned).

    Raises:
        NotImplementedError: if ``torch.fx`` cannot trace the model.
        TypeError: a wrapper (DataParallel, torch.compile) instead of the network: the message names the module.
    """
    refuse_wrappers(model)
    graph = trace(model) if graph is None else graph
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
