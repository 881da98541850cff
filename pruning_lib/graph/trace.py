"""The model's data flow as a ``torch.fx`` graph, and the refusals that come before any analysis.

`trace` records every call of ``forward`` as a node.  Modules stay whole (one node, never traced through) when
they come from ``torch.nn``, when their type is in the registry of `layer_types`, or when they hold weights of
their own and no submodules (a custom layer: the analysis then names it, or knows it once it is registered).
`refuse_wrappers` names the module to prune when a wrapper (DataParallel, DDP, ``torch.compile``) is given
instead of the network.
"""

from __future__ import annotations

import traceback

import torch.fx as fx
import torch.nn as nn

from .layer_types import layer_type

__all__ = ["refuse_wrappers", "trace"]


def refuse_wrappers(model: nn.Module) -> None:
    """Wrappers whose module tree is not the network's: raise TypeError naming the module to prune instead."""
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        raise TypeError(f"the model is wrapped in {type(model).__name__}: prune model.module, then wrap it again")
    if type(model).__name__ == "OptimizedModule" and hasattr(model, "_orig_mod"):
        raise TypeError("the model is compiled (torch.compile): prune model._orig_mod, then compile the pruned model again")


def _where(error: BaseException) -> str:
    """ ", at file:line `source`" for the innermost frame of the model's own code (not torch's) in `error`."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if "/torch/" not in f.filename.replace("\\", "/")]
    if not frames:
        return ""
    f = frames[-1]
    return f", at {f.filename}:{f.lineno} `{(f.line or '').strip()}`"


class _Tracer(fx.Tracer):
    """torch.fx's tracer, keeping registered layer types and custom layers with their own weights whole."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if layer_type(m) is not None:
            return True
        if next(m.children(), None) is None and next(m.parameters(recurse=False), None) is not None:
            return True
        return super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.Graph:
    """The model's data flow as a ``torch.fx`` graph (leaf modules from torch.nn stay whole).

    Raises:
        TypeError: a wrapper instead of the network (`refuse_wrappers`).
        NotImplementedError: ``torch.fx`` cannot trace the model; the message names the line of the model's code.
    """
    refuse_wrappers(model)
    tracer = _Tracer()
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
