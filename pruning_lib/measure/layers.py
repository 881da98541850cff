"""Where the time goes: per-layer time (forward hooks), FLOPs and parameters side by side."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import runtime
from .counting import flops_per_layer
from .deploy import ChannelsLast, deployment_form

__all__ = ["explain_gap", "layer_times", "per_layer_table", "per_layer_tables", "time_by_type"]


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if next(m.children(), None) is None and name]


def _time_leaves(runner: nn.Module, leaves: list[tuple[str, nn.Module]], shape: tuple[int, ...],
                 device: torch.device, repeats: int, warmup: int) -> tuple[dict, list, list]:
    """Run `runner` ``warmup + repeats`` times with timing hooks on `leaves`; per-leaf and whole-pass seconds."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)  # on a GPU, wait for each layer
    starts: dict[nn.Module, float] = {}
    times: dict[str, list[float]] = {}
    order: list[str] = []
    handles = []
    for name, m in leaves:
        def pre(mod, args):
            sync()
            starts[mod] = time.perf_counter()

        def post(mod, args, out, _n=name):
            sync()
            if _n not in times:
                times[_n] = []
                order.append(_n)
            times[_n].append(time.perf_counter() - starts[mod])

        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
    totals = []
    try:
        with torch.no_grad():
            for i in range(warmup + repeats):
                if i == warmup:
                    times.clear()
                    order.clear()
                sync()
                t0 = time.perf_counter()
                runner(x)
                sync()
                if i >= warmup:
                    totals.append(time.perf_counter() - t0)
    finally:
        for h in handles:
            h.remove()
    return times, order, totals


def layer_times(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    form: str = "eager",
    num_threads: int | None = None,
    device: str | torch.device = "cpu",
    repeats: int = 20,
    warmup: int = 3,
    include_rest: bool = True,
) -> pd.DataFrame:
    """Wall-clock time of each leaf module in one forward pass, measured with forward hooks.

    A pre-hook and a post-hook read ``time.perf_counter`` around every leaf module; the model
    runs ``warmup + repeats`` times (eval mode, no grad, in `form`, see
    :func:`pruning_lib.deployment_form`), and each module's time is the median over the
    timed passes.  The hooks add about a microsecond per module, which matters only at tiny batches.
    On a GPU each hook synchronises first, so a module is charged for its own kernels.

    Returns:
        One row per leaf module that ran, in execution order: ``module`` (name in `model`, so the
        rows of two forms line up), ``type``, ``time_ms`` (per forward of the whole batch) and
        ``share`` (of the median whole forward pass).  With `include_rest`, a last row
        ``"(outside modules)"`` holds the rest of the forward pass: functional calls such as
        ``torch.flatten``, the input's layout conversion, and Python between the modules.
    """
    shape = tuple(input_shape)
    with runtime.mode(model), runtime.num_threads(num_threads):
        runner = deployment_form(model, form)
        prefix = "model." if isinstance(runner, ChannelsLast) else ""
        leaves = [(name.removeprefix(prefix), m) for name, m in _leaves(runner)]
        times, order, totals = _time_leaves(runner, leaves, shape, torch.device(device), repeats, warmup)
    types = {name: type(m).__name__ for name, m in leaves}
    total_ms = 1e3 * statistics.median(totals)
    rows = [{"module": n, "type": types[n], "time_ms": 1e3 * statistics.median(times[n])} for n in order]
    if include_rest:
        rest = max(total_ms - sum(r["time_ms"] for r in rows), 0.0)
        rows.append({"module": "(outside modules)", "type": "(outside modules)", "time_ms": rest})
    df = pd.DataFrame(rows, columns=["module", "type", "time_ms"])
    df["share"] = df["time_ms"] / total_ms
    return df


def per_layer_table(model: nn.Module, input_shape: Sequence[int], **timing: Any) -> pd.DataFrame:
    """FLOPs, parameters and measured time of each leaf module, with their shares in percent.

    `timing` goes to `layer_times` (``form``, ``num_threads``, ``repeats``, ...).  FLOPs and
    parameters are counted on `model` as given (``flops_per_layer``), 0 for layers without
    FLOPs (BatchNorm, ReLU, pooling in ``FlopCounterMode``'s convention).
    """
    times = layer_times(model, input_shape, **timing)
    counted = flops_per_layer(model, input_shape).set_index("module")
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in model.named_modules()}
    df = times.copy()
    df["flops"] = [int(counted["flops"].get(n, 0)) for n in df["module"]]
    df["params"] = [int(params.get(n, 0)) for n in df["module"]]
    df["% FLOPs"] = 100 * df["flops"] / max(df["flops"].sum(), 1)
    df["% params"] = 100 * df["params"] / max(df["params"].sum(), 1)
    df["% time"] = 100 * df["share"]
    return df[["module", "type", "flops", "params", "time_ms", "% FLOPs", "% params", "% time"]]


def per_layer_tables(
    models: Mapping[str, nn.Module],
    input_shape: Sequence[int],
    *,
    forms: Sequence[str] = ("eager", "deploy"),
    rounds: int = 3,
    **timing: Any,
) -> dict[str, pd.DataFrame]:
    """`per_layer_table` for each model and form, the models taking turns over `rounds` rounds.

    Each module's ``time_ms`` is the median over the rounds (then the shares are recomputed), so a
    slow moment of a shared machine does not land on one model only.  `timing` goes to `layer_times`.

    Returns:
        ``{"<name>, <form>": table}`` in the order of `models`, then `forms`.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1; got {rounds}")
    keys = [(name, form) for name in models for form in forms]
    runs: dict[tuple[str, str], list[pd.DataFrame]] = {k: [] for k in keys}
    for _ in range(rounds):
        for name, form in keys:
            runs[(name, form)].append(per_layer_table(models[name], input_shape, form=form, **timing))
    out = {}
    for (name, form), tables in runs.items():
        df = tables[0].copy()
        df["time_ms"] = np.median(np.stack([t["time_ms"].to_numpy() for t in tables]), axis=0)
        df["% time"] = 100 * df["time_ms"] / df["time_ms"].sum()
        out[f"{name}, {form}"] = df
    return out


def time_by_type(table: pd.DataFrame) -> pd.Series:
    """Milliseconds per layer type (``Conv2d``, ``BatchNorm2d``, ``MaxPool2d``, ...) from `layer_times`."""
    return table.groupby("type", sort=False)["time_ms"].sum()


def explain_gap(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Split each model's measured forward time into layers that have FLOPs (conv, linear) and the rest.

    `tables` maps a name to a `per_layer_table` (same batch, threads and form for all).  Returns one
    row per name with ``total_ms``, ``flop_layers_ms`` (conv + linear), ``other_ms`` (BatchNorm,
    ReLU, pooling, outside modules), ``other_share``, ``gflops`` (of the batch) and
    ``gflop_per_s`` (of the conv and linear layers: how efficiently the FLOPs that remain are run).
    The speedup is ``total_ms`` of the reference over the pruned one; it falls short of the FLOPs
    ratio when ``other_ms`` does not shrink with the FLOPs or when ``gflop_per_s`` drops.
    """
    rows = {}
    for name, t in tables.items():
        with_flops = t["flops"] > 0
        flop_ms = float(t.loc[with_flops, "time_ms"].sum())
        total = float(t["time_ms"].sum())
        gflops = float(t["flops"].sum()) / 1e9
        rows[name] = {"total_ms": total, "flop_layers_ms": flop_ms, "other_ms": total - flop_ms,
                      "other_share": (total - flop_ms) / total, "gflops": gflops,
                      "gflop_per_s": gflops / (flop_ms / 1e3) if flop_ms > 0 else math.nan}
    return pd.DataFrame.from_dict(rows, orient="index")
