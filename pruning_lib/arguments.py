"""The caller's words: every argument of `pruning_lib.prune` checked before any work is done.

Each check names the argument as the caller wrote it, says what is wrong and what to pass instead, and raises
before anything is traced, trained or timed (a `TypeError` for the wrong kind of thing, a `ValueError` for a wrong
value).  `example_inputs` are run through the model once, so a wrong shape or dtype is named as such rather than
surfacing later inside torch.  The README's table "When an argument is wrong" lists these messages, and
``tests/test_arguments.py`` checks each one as the README writes it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from .graph.groups import ChannelGroup
from .graph.layer_types import MIXES, flow_of, layer_type
from .graph.trace import refuse_wrappers
from .measure.deploy import FORMS
from .measure.runtimes import RUNTIMES, available_runtimes
from .rank.criteria import CRITERIA
from .runtime import call, describe_inputs, model_device

__all__ = ["check_data", "check_example_inputs", "check_model", "check_options", "check_targets", "creates_process_group",
           "kept_whole"]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_model(model: Any) -> None:
    """A network (not a wrapper: DataParallel, DDP or torch.compile's module are named)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (your trained network); got a {type(model).__name__}")
    refuse_wrappers(model)


def _first_layer(model: nn.Module, graph) -> tuple[str, int] | None:
    """The first layer that reads the input and makes channels, and the input channels it expects."""
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        return None
    for node in graph.nodes:
        if node.op == "call_module" and placeholders[0] in node.all_input_nodes:
            module = dict(model.named_modules())[node.target]
            entry = layer_type(module)
            if entry is not None and flow_of(module) == MIXES and entry.columns:
                groups = getattr(module, "groups", 1)
                return node.target, int(getattr(module, entry.columns).shape[entry.column_dim]) * groups
            return None
    return None


def check_example_inputs(model: nn.Module, example_inputs: Any, graph=None) -> None:
    """One batch the model accepts: a tensor, or a tuple or dict of tensors, on the model's device, run once."""
    tensors = (list(example_inputs.values()) if isinstance(example_inputs, dict) else
               list(example_inputs) if isinstance(example_inputs, (tuple, list)) else [example_inputs])
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise TypeError("example_inputs must be one batch of inputs: a tensor such as torch.randn(1, 3, 224, 224), or "
                        "a tuple or dict of tensors for a model with several inputs; got "
                        + describe_inputs(example_inputs))
    if any(t.dim() == 0 for t in tensors):
        raise ValueError(f"example_inputs must have a batch dimension first; got {describe_inputs(example_inputs)}")
    device = model_device(model)
    weights = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    for t in tensors:
        if t.device.type != device.type:
            raise ValueError(f"example_inputs are on {t.device}, the model on {device}: move them with "
                             f".to({str(device)!r})")
        if weights is not None and not t.is_floating_point() and len(tensors) == 1:
            raise TypeError(f"example_inputs are {t.dtype}, the model's weights {weights}: pass a float tensor "
                            "(e.g. x.float())")
    first = _first_layer(model, graph) if graph is not None and len(tensors) == 1 else None
    if first is not None and tensors[0].dim() > 1 and tensors[0].shape[1] != first[1]:
        shape = ", ".join(map(str, (tensors[0].shape[0], first[1], *tensors[0].shape[2:])))
        raise ValueError(f"example_inputs have {tensors[0].shape[1]} channels ({describe_inputs(example_inputs)}), but "
                         f"the model's first layer {first[0]} expects {first[1]}: pass one batch the model accepts, "
                         f"e.g. torch.randn({shape})")
    training = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            call(model, example_inputs)
    except Exception as err:  # noqa: BLE001 - whatever the model raises on these inputs
        line = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise ValueError(f"example_inputs ({describe_inputs(example_inputs)}) do not run through the model: "
                         f"{type(err).__name__}: {line}; pass one batch the model accepts") from err
    finally:
        for m, was in training.items():
            m.training = was


def check_data(name: str, data: Any) -> None:
    """Batches of ``(inputs, targets)`` that can be read again every iteration (a DataLoader, a list)."""
    if isinstance(data, (str, bytes, torch.Tensor)) or not isinstance(data, Iterable):
        raise TypeError(f"{name} must yield batches of (inputs, targets), such as a DataLoader or a list of pairs; got "
                        f"a {type(data).__name__}")
    if isinstance(data, Iterator):
        raise TypeError(f"{name} is an iterator that can be read only once (a generator?); Prune–Train–Repeat reads "
                        "it again every iteration: pass a DataLoader or a list of batches")
    batch = next(iter(data), None)
    if batch is None:
        raise ValueError(f"{name} yielded no batches: check its dataset and batch size")
    if isinstance(batch, Mapping):
        keys = list(batch)
        raise TypeError(f"{name} yields dicts with keys {keys}, not (inputs, targets) pairs: pass e.g. "
                        f"[(b[{keys[0]!r}], b[{keys[-1]!r}]) for b in loader]")
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        what = f"{type(batch).__name__}s of {len(batch)} items" if isinstance(batch, (tuple, list)) else \
            f"{type(batch).__name__}s"
        raise TypeError(f"{name} yields {what}, not (inputs, targets) pairs")
    if not isinstance(batch[1], torch.Tensor):
        raise TypeError(f"{name}'s targets are a {type(batch[1]).__name__}, not a tensor")


def check_targets(*, flops_reduction: Any, speedup: Any, params_reduction: Any, fraction: Any,
                  min_metric: Any) -> None:
    """At least one target, each a number in its range."""
    if all(v is None for v in (flops_reduction, speedup, params_reduction, fraction, min_metric)):
        raise ValueError("give a target: flops_reduction (e.g. 2.0), speedup (e.g. 2.0), params_reduction (e.g. 4.0), "
                         "fraction (of filters, e.g. 0.5) or min_metric")
    for name, value, what in (("flops_reduction", flops_reduction, "how many times fewer FLOPs, a number > 1 (2.0: half"
                                                                    " of them)"),
                              ("speedup", speedup, "how many times faster, a number > 1 (2.0: twice as fast)"),
                              ("params_reduction", params_reduction, "how many times fewer parameters, a number > 1 "
                                                                     "(4.0: a quarter of them)")):
        if value is not None and not (_is_number(value) and value > 1):
            raise ValueError(f"{name}={value!r}: {what}")
    if fraction is not None and not (_is_number(fraction) and 0 < fraction < 1):
        raise ValueError(f"fraction={fraction!r}: the share of all prunable channels to remove, a number in (0, 1) "
                         "(e.g. 0.5)")
    if min_metric is not None and not _is_number(min_metric):
        raise ValueError(f"min_metric={min_metric!r}: the lowest metric to accept, a number on your metric's scale "
                         "(accuracy: e.g. 0.9)")


def check_options(*, criterion: Any, loss_fn: Any, metric: Any, optimizer: Any, lr: Any,
                  fraction_per_iteration: Any, finetune_steps: Any, multiple_of: Any, max_fraction: Any,
                  checkpoint: Any, restart: Any, runtime: Any, num_threads: Any, seed: Any, speedup: Any,
                  model: nn.Module, example_inputs: Any) -> None:
    """Every other argument: its kind, its range, and no argument that would be ignored."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion={criterion!r} is not a criterion; choose one of {sorted(CRITERIA)} (or add one with "
                         "rank.criteria.register_criterion)")
    for name, value, signature in (("loss_fn", loss_fn, "loss_fn(outputs, targets) -> a scalar tensor"),
                                   ("metric", metric, "metric(model, val_data) -> a float, higher is better"),
                                   ("optimizer", optimizer, "optimizer(parameters) -> a torch.optim.Optimizer")):
        if value is not None and not callable(value):
            raise TypeError(f"{name} must be a function {signature}; got a {type(value).__name__}")
    if lr is not None and optimizer is not None:
        raise ValueError(f"lr={lr!r} would be ignored: optimizer= builds the optimizer; set the learning rate there "
                         "(e.g. optimizer=lambda p: torch.optim.SGD(p, lr=0.01))")
    if lr is not None and not (_is_number(lr) and lr > 0):
        raise ValueError(f"lr={lr!r}: the fine-tuning learning rate, a number > 0 (e.g. 1e-4)")
    if not (_is_number(fraction_per_iteration) and 0 < fraction_per_iteration < 1):
        raise ValueError(f"fraction_per_iteration={fraction_per_iteration!r}: the share of the channels left removed "
                         "per iteration, in (0, 1) (e.g. 0.1)")
    if not (_is_int(finetune_steps) and finetune_steps >= 0):
        raise ValueError(f"finetune_steps={finetune_steps!r}: the fine-tuning steps after each cut, an integer >= 0")
    if not (_is_int(multiple_of) and multiple_of >= 1):
        raise ValueError(f"multiple_of={multiple_of!r}: keep every pruned layer's width a multiple of this, an integer "
                         ">= 1 (8 or 16 suit CPU vector units)")
    if max_fraction is not None and not (_is_number(max_fraction) and 0 < max_fraction <= 1):
        raise ValueError(f"max_fraction={max_fraction!r}: the largest share of one layer's channels to remove, in "
                         "(0, 1], or None for no cap")
    if checkpoint is not None:
        if not isinstance(checkpoint, (str, os.PathLike)):
            raise TypeError(f"checkpoint must be a file path (a str or a Path); got a {type(checkpoint).__name__}")
        if Path(checkpoint).expanduser().is_dir():
            raise ValueError(f"checkpoint={str(checkpoint)!r} is a folder; give a file name such as "
                             f"{str(Path(checkpoint) / 'prune.pt')!r}")
    if restart and checkpoint is None:
        raise ValueError("restart=True would be ignored: it replaces a checkpoint made by another run; give "
                         "checkpoint= too")
    if speedup is None and runtime is not None:
        raise ValueError(f"runtime={runtime!r} would be ignored: it says where speedup= is measured; give speedup= "
                         "too (or leave runtime out)")
    if speedup is None and num_threads is not None:
        raise ValueError(f"num_threads={num_threads!r} would be ignored: it says how speedup= is measured; give "
                         "speedup= too (or leave num_threads out)")
    if runtime is not None and runtime not in FORMS + RUNTIMES:
        raise ValueError(f"runtime={runtime!r} is not a form or runtime; choose one of {FORMS + RUNTIMES}")
    if runtime in RUNTIMES and available_runtimes()[runtime]:
        raise ValueError(f"runtime={runtime!r} cannot run here: {available_runtimes()[runtime]}")
    if num_threads is not None and not (_is_int(num_threads) and num_threads >= 1):
        raise ValueError(f"num_threads={num_threads!r}: the threads the network runs on, an integer >= 1")
    if not _is_int(seed):
        raise TypeError(f"seed must be an int; got {seed!r}")
    if speedup is not None:
        if model_device(model).type != "cpu":
            raise ValueError(f"speedup= times the network on this machine's CPU, but the model is on "
                             f"{model_device(model)}: pass a CPU model, or ask for flops_reduction instead")
        if not isinstance(example_inputs, torch.Tensor):
            raise ValueError("speedup= times the network on inputs shaped like example_inputs, which must then be one "
                             "tensor (a model with several inputs: ask for flops_reduction or params_reduction)")


def kept_whole(model: nn.Module, exclude: Any, groups: Mapping[str, ChannelGroup]) -> tuple[str, ...]:
    """The groups `exclude` keeps whole: every group one of its modules (named, or given as modules, or any of their
    submodules) belongs to, in any role.  A module kept whole keeps every tensor as it is: neither its filters nor its
    input channels go."""
    if exclude is None:
        return ()
    if isinstance(exclude, (str, nn.Module)):
        exclude = [exclude]
    if not isinstance(exclude, Iterable):
        raise TypeError(f"exclude must be module names or modules of the model (a list); got a {type(exclude).__name__}")
    modules = dict(model.named_modules())
    names = {id(m): n for n, m in modules.items()}
    wanted = []
    for item in exclude:
        name = names.get(id(item)) if isinstance(item, nn.Module) else item
        if not isinstance(name, str) or name not in modules:
            shown = item if isinstance(item, str) else type(item).__name__
            examples = ", ".join(repr(n) for n in list(modules)[1:4])
            raise ValueError(f"exclude names {shown!r}, which is not a module of {type(model).__name__}: name modules "
                             f"of model.named_modules(), such as {examples}")
        wanted.append(name)
    def inside(member: str, name: str) -> bool:          # the module itself, or one of its submodules
        return member == name or member.startswith(name + ".")

    return tuple(g.name for g in groups.values() if any(inside(m.module, name) for m in g.members for name in wanted))


def creates_process_group() -> Callable[[], None]:
    """Whether `distributed.join_from_environment` is about to create the process group: a function that destroys
    it afterwards (a no-op when the caller had created it, or there is none)."""
    import torch.distributed as dist

    created = int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized()

    def destroy() -> None:
        if created and dist.is_initialized():
            dist.destroy_process_group()
    return destroy
