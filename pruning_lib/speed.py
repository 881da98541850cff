"""Speed and size, measured side by side (notebook 04 and ``benchmarks/bench_speed.py``).

Pure functions that return DataFrames; plotting lives in :mod:`pruning_lib.plots_speed`.

- **Architectures from widths.** Notebook 03 records the filters left in every conv at every
  iteration (``reports/iterative.json``).  `architecture_from_widths` rebuilds any of those
  architectures from a freshly built model by removing the *last* filters of each conv.  The
  weights are random, which is fine for timing: the cost of a dense float32 conv depends only on
  its shape.
- **Timing.** Everything goes through :func:`pruning_lib.bench.measure_latency` /
  :func:`pruning_lib.bench.compare`, in one of :data:`pruning_lib.bench.FORMS` (``"eager"``, or
  ``"deploy"``: BatchNorm folded into the convs and channels-last tensors).  `layer_times` times
  each leaf module with forward hooks and ``time.perf_counter``.
- **Speedup against FLOPs.** ``speedup = dense latency / pruned latency`` (same batch, threads and
  form), ``flops_ratio = dense FLOPs / pruned FLOPs``; their quotient ``speedup_per_flops`` is 1 when
  the time falls exactly with the FLOPs.
- **reports/summary.json.** `build_summary`, `validate_summary`, `write_summary`.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import bench, surgery
from .paths import reports_dir

__all__ = [
    "read_iterative_report",
    "history_widths",
    "architecture_from_widths",
    "side_by_side",
    "speedup_sweep",
    "batch_sweep",
    "layer_times",
    "per_layer_table",
    "per_layer_tables",
    "time_by_type",
    "explain_gap",
    "conv_width_staircase",
    "transfer_widths",
    "first_linear",
    "check_targets",
    "build_summary",
    "validate_summary",
    "write_summary",
]


# --------------------------------------------------------------------------- notebook 03's results


def read_iterative_report(path: str | Path | None = None) -> dict[str, pd.DataFrame]:
    """Notebook 03's ``iterative.json`` as ``{criterion: history}``, one row per iteration.

    Each history has notebook 03's columns (``iteration``, ``fraction_removed``, ``params``,
    ``gflops``, accuracies, ...) and one ``filters:<conv>`` column per conv (filters left), as
    returned by :func:`pruning_lib.iterative.prune_train_repeat`.  Row 0 is the unpruned model.

    Raises:
        FileNotFoundError: the file is missing (run notebook 03 first).
        ValueError: the file is not a ``{criterion: [records]}`` report.
    """
    path = Path(path) if path is not None else reports_dir() / "iterative.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run notebooks/03_iterative_pruning.ipynb first "
                                "(or make demo), which writes it")
    payload = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(payload, dict) or not payload:
        raise ValueError(f"{path} should map criterion -> list of iteration records; got {type(payload).__name__}")
    histories = {}
    for criterion, records in payload.items():
        if not isinstance(records, list) or not records or not all("filters" in r for r in records):
            raise ValueError(f"{path}: {criterion!r} should be a non-empty list of records with a 'filters' "
                             "dict; regenerate it with notebook 03")
        rows = []
        for r in records:
            row = {k: v for k, v in r.items() if k != "filters"}
            row.update({f"filters:{conv}": int(n) for conv, n in r["filters"].items()})
            rows.append(row)
        histories[criterion] = pd.DataFrame(rows)
    return histories


def history_widths(history: pd.DataFrame) -> list[dict[str, int]]:
    """The filters left per conv at each iteration: ``[{conv: n}, ...]``, one dict per row of `history`."""
    cols = [c for c in history.columns if c.startswith("filters:")]
    if not cols:
        raise ValueError("history has no 'filters:<conv>' columns; pass a prune_train_repeat history "
                         "or one from read_iterative_report")
    return [{c.removeprefix("filters:"): int(row[c]) for c in cols} for _, row in history.iterrows()]


def architecture_from_widths(template: nn.Module, widths: Mapping[str, int]) -> nn.Module:
    """A copy of `template` whose convs keep ``widths[conv]`` filters (the first ones).

    Removes the last ``n - widths[conv]`` filters of each named conv with
    :func:`pruning_lib.surgery.prune_filters`, so BatchNorms and consumers (the next conv, the first
    Linear) shrink with it.  Convs not named keep their width.  Use a freshly built model as the
    template when only the architecture matters (timing); `template` itself is not changed.

    Raises:
        ValueError: a conv is unknown or not prunable, or a width is not in ``1..n``.
    """
    current = surgery.filters_per_layer(template)
    unknown = sorted(set(widths) - set(current))
    if unknown:
        raise ValueError(f"widths names {unknown}, which are not prunable convs of {type(template).__name__}; "
                         f"known: {list(current)}")
    plan = {}
    for conv, keep in widths.items():
        n = current[conv]
        if isinstance(keep, bool) or not isinstance(keep, (int, np.integer)) or not 1 <= keep <= n:
            raise ValueError(f"widths[{conv!r}] = {keep!r}: {conv} has {n} filters, so keep 1..{n}")
        if keep < n:
            plan[conv] = list(range(int(keep), n))
    model = copy.deepcopy(template)
    return surgery.prune_filters(model, plan) if plan else model


# --------------------------------------------------------------------------- side by side


def _ratio(reference: float, value: float) -> float:
    return math.nan if value == 0 else reference / value


def side_by_side(
    models: Mapping[str, nn.Module],
    image_shape: Sequence[int],
    batches: Sequence[int],
    *,
    forms: Sequence[str] = ("eager", "deploy"),
    accuracy: Mapping[str, float] | None = None,
    num_threads: int | None = None,
    device: str | torch.device = "cpu",
    min_run_time: float = 0.3,
    rounds: int = 3,
    reference: str | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """:func:`pruning_lib.bench.compare` at each batch size and form, repeated `rounds` times.

    The rounds interleave the models (dense, pruned, dense, pruned, ...), so a slow moment of the
    machine hits all of them.  ``latency_ms`` is the median over rounds of compare's median,
    ``latency_iqr_ms`` the median over rounds of the within-round interquartile range.

    Args:
        image_shape: one image, ``(C, H, W)``; FLOPs are per image, latency per batch.

    Returns:
        One row per (form, batch, model) with columns ``form``, ``batch``, ``model``, ``params``,
        ``size_mb``, ``gflops``, ``accuracy``, ``latency_ms``, ``latency_iqr_ms``, ``throughput``
        (images/s), ``speedup``, ``flops_ratio``, ``params_ratio``, ``size_ratio`` (reference / model:
        bigger is better) and ``speedup_per_flops`` (speedup / flops_ratio).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1; got {rounds}")
    reference = reference or next(iter(models))
    jobs = [(form, b) for form in forms for b in batches]
    frames = []
    for form, b in tqdm(jobs, disable=not progress, desc="side by side"):
        runs = [bench.compare(dict(models), (b, *image_shape), reference=reference, num_threads=num_threads,
                              device=device, min_run_time=min_run_time, form=form) for _ in range(rounds)]
        df = runs[0].copy()
        for col in ("latency_ms", "latency_iqr_ms"):
            df[col] = [statistics.median(r.loc[name, col] for r in runs) for name in df.index]
        df["throughput"] = b / (df["latency_ms"] / 1e3)
        df["speedup"] = [_ratio(df.loc[reference, "latency_ms"], v) for v in df["latency_ms"]]
        df["speedup_per_flops"] = df["speedup"] / df["flops_ratio"]
        df["accuracy"] = [(accuracy or {}).get(name, math.nan) for name in df.index]
        frames.append(df.rename_axis("model").reset_index().assign(form=form, batch=b))
    out = pd.concat(frames, ignore_index=True)
    first = ["form", "batch", "model", "params", "size_mb", "gflops", "accuracy", "latency_ms", "latency_iqr_ms",
             "throughput", "speedup", "flops_ratio", "speedup_per_flops", "params_ratio", "size_ratio"]
    return out[first]


def _timed(models: Mapping[Any, nn.Module], shape: tuple[int, ...], form: str, rounds: int,
           **kwargs: Any) -> dict[Any, dict[str, float]]:
    """Median latency (and IQR) of each model, the models interleaved over `rounds`."""
    runs: dict[Any, list[dict]] = {k: [] for k in models}
    for _ in range(rounds):
        for key, model in models.items():
            runs[key].append(bench.measure_latency(model, shape, form=form, **kwargs))
    return {k: {"latency_ms": statistics.median(r["median_ms"] for r in v),
                "latency_iqr_ms": statistics.median(r["iqr_ms"] for r in v)} for k, v in runs.items()}


def speedup_sweep(
    template: nn.Module,
    histories: Mapping[str, pd.DataFrame],
    input_shape: Sequence[int],
    *,
    forms: Sequence[str] = ("eager", "deploy"),
    num_threads: int | None = None,
    device: str | torch.device = "cpu",
    min_run_time: float = 0.2,
    rounds: int = 1,
    progress: bool = False,
) -> pd.DataFrame:
    """Measured speedup against FLOPs reduction for every iteration of notebook 03's runs.

    Each iteration's architecture is rebuilt from its ``filters:<conv>`` widths on `template`
    (random weights; see `architecture_from_widths`) and timed at ``input_shape`` (batch included)
    in each form; the speedup is against the unpruned `template` in the same form.  Identical
    architectures (every run's row 0) are timed once.

    Returns:
        One row per (form, criterion, iteration): ``form``, ``criterion``, ``iteration``,
        ``fraction_removed``, ``gflops`` (per image, counted on the rebuilt model), ``params``,
        ``flops_ratio``, ``latency_ms``, ``latency_iqr_ms``, ``speedup``, ``speedup_per_flops``, ``batch``.
    """
    shape = tuple(input_shape)
    archs: dict[tuple, nn.Module] = {}
    rows = []
    for criterion, history in histories.items():
        for (_, rec), widths in zip(history.iterrows(), history_widths(history)):
            key = tuple(sorted(widths.items()))
            if key not in archs:
                archs[key] = architecture_from_widths(template, widths).to(device).eval()
            rows.append({"criterion": criterion, "iteration": int(rec["iteration"]),
                         "fraction_removed": float(rec.get("fraction_removed", math.nan)), "key": key})
    dense_key = tuple(sorted(surgery.filters_per_layer(template).items()))
    archs.setdefault(dense_key, copy.deepcopy(template).to(device).eval())
    static = {k: {"gflops": bench.count_flops(m, (1, *shape[1:])) / 1e9, "params": bench.count_parameters(m)}
              for k, m in archs.items()}
    out = []
    for form in tqdm(forms, disable=not progress, desc="speedup sweep"):
        times = _timed(archs, shape, form, rounds, num_threads=num_threads, device=device,
                       min_run_time=min_run_time)
        dense = times[dense_key]["latency_ms"]
        for r in rows:
            t, s = times[r["key"]], static[r["key"]]
            speedup = dense / t["latency_ms"]
            flops_ratio = static[dense_key]["gflops"] / s["gflops"]
            out.append({"form": form, "criterion": r["criterion"], "iteration": r["iteration"],
                        "fraction_removed": r["fraction_removed"], "gflops": s["gflops"], "params": s["params"],
                        "flops_ratio": flops_ratio, "latency_ms": t["latency_ms"],
                        "latency_iqr_ms": t["latency_iqr_ms"], "speedup": speedup,
                        "speedup_per_flops": speedup / flops_ratio, "batch": shape[0]})
    return pd.DataFrame(out)


def batch_sweep(
    models: Mapping[str, nn.Module],
    image_shape: Sequence[int],
    batches: Sequence[int],
    *,
    forms: Sequence[str] = ("eager", "deploy"),
    reference: str | None = None,
    num_threads: int | None = None,
    device: str | torch.device = "cpu",
    min_run_time: float = 0.2,
    rounds: int = 1,
    progress: bool = False,
) -> pd.DataFrame:
    """Latency, throughput and speedup of each model at each batch size and form.

    Returns:
        One row per (form, batch, model): ``latency_ms`` (per batch), ``latency_iqr_ms``,
        ``ms_per_image``, ``throughput`` (images/s), ``speedup`` (reference latency / latency, same
        batch and form), ``flops_ratio`` (reference FLOPs / FLOPs) and ``speedup_per_flops``.
    """
    reference = reference or next(iter(models))
    flops = {k: bench.count_flops(m, (1, *image_shape)) for k, m in models.items()}
    rows = []
    jobs = [(form, b) for form in forms for b in batches]
    for form, b in tqdm(jobs, disable=not progress, desc="batch sweep"):
        times = _timed(models, (b, *image_shape), form, rounds, num_threads=num_threads, device=device,
                       min_run_time=min_run_time)
        for name, t in times.items():
            speedup = times[reference]["latency_ms"] / t["latency_ms"]
            ratio = flops[reference] / flops[name]
            rows.append({"form": form, "batch": b, "model": name, "latency_ms": t["latency_ms"],
                         "latency_iqr_ms": t["latency_iqr_ms"], "ms_per_image": t["latency_ms"] / b,
                         "throughput": b / (t["latency_ms"] / 1e3), "speedup": speedup, "flops_ratio": ratio,
                         "speedup_per_flops": speedup / ratio})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- where the time goes


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if next(m.children(), None) is None and name]


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
    :func:`pruning_lib.bench.deployment_form`), and each module's time is the median over the
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
    threads = torch.get_num_threads() if num_threads is None else num_threads
    flags = {m: m.training for m in model.modules()}
    runner = bench.deployment_form(model.eval(), form)
    prefix = "model." if isinstance(runner, bench._ChannelsLast) else ""
    leaves = [(name.removeprefix(prefix), m) for name, m in _leaves(runner)]
    cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)  # on a GPU, wait for each layer's kernels
    starts: dict[nn.Module, float] = {}
    times: dict[str, list[float]] = {}
    order: list[str] = []
    handles = []
    for name, m in leaves:
        def pre(mod, args, _n=name):
            sync()
            starts[mod] = time.perf_counter()

        def post(mod, args, out, _n=name):
            sync()
            if _n not in times:
                times[_n] = []
                order.append(_n)
            times[_n].append(time.perf_counter() - starts[mod])

        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).to(device)
    totals = []
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
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
        torch.set_num_threads(previous)
        for h in handles:
            h.remove()
        for m, training in flags.items():
            m.training = training
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
    parameters are counted on `model` as given (``bench.flops_per_layer``), 0 for layers without
    FLOPs (BatchNorm, ReLU, pooling in ``FlopCounterMode``'s convention).
    """
    times = layer_times(model, input_shape, **timing)
    counted = bench.flops_per_layer(model, input_shape).set_index("module")
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


def conv_width_staircase(
    out_channels: Iterable[int],
    *,
    in_channels: int = 32,
    size: int = 14,
    batch: int = 64,
    form: str = "eager",
    num_threads: int | None = 1,
    min_run_time: float = 0.1,
    seed: int = 0,
) -> pd.DataFrame:
    """Time one ``Conv2d(in_channels, c, 3, padding=1)`` on ``(batch, in_channels, size, size)`` for each c.

    FLOPs grow linearly with c; on a CPU with wide vector registers the time grows in *steps*
    (a width that is not a multiple of the vector width pays for the next multiple).

    Returns:
        One row per c: ``out_channels``, ``gflops`` (per batch), ``latency_ms``, ``gflops_per_s``.
    """
    rows = []
    torch.manual_seed(seed)
    for c in out_channels:
        conv = nn.Conv2d(in_channels, int(c), 3, padding=1)
        shape = (batch, in_channels, size, size)
        r = bench.measure_latency(conv, shape, num_threads=num_threads, min_run_time=min_run_time, form=form)
        flops = 2 * int(c) * in_channels * 9 * size * size * batch
        rows.append({"out_channels": int(c), "gflops": flops / 1e9, "latency_ms": r["median_ms"],
                     "gflops_per_s": flops / 1e9 / (r["median_ms"] / 1e3)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- VGG16, the seed's setting


def transfer_widths(
    source_kept: Sequence[float],
    target: Mapping[str, int],
    *,
    remove_fraction: float,
    multiple_of: int = 1,
    min_keep: int = 1,
) -> dict[str, int]:
    """Filters to keep per conv of `target` so that its layers are pruned the way a source network was.

    `source_kept` is the fraction of filters each conv of the source kept, in forward order (e.g.
    notebook 03's last widths over its first ones).  Each target conv takes the source's fraction at
    the same relative depth (linear interpolation over 0..1), all scaled by one factor chosen so that
    ``remove_fraction`` of all target filters are removed, as closely as blocks of `multiple_of` allow.
    Every width is a multiple of `multiple_of` (at least ``max(min_keep, multiple_of)``), at most the
    original width.
    """
    if not 0 <= remove_fraction < 1:
        raise ValueError(f"remove_fraction must be in [0, 1); got {remove_fraction}")
    if not source_kept or any(not 0 < f <= 1 for f in source_kept):
        raise ValueError(f"source_kept must be fractions in (0, 1]; got {list(source_kept)}")
    names, widths = list(target), np.array(list(target.values()), dtype=float)
    depth_src = np.linspace(0, 1, len(source_kept)) if len(source_kept) > 1 else np.zeros(1)
    depth_tgt = np.linspace(0, 1, len(names)) if len(names) > 1 else np.zeros(1)
    base = np.interp(depth_tgt, depth_src, np.asarray(source_kept, dtype=float))
    floor = max(min_keep, multiple_of)
    goal = (1 - remove_fraction) * widths.sum()

    def kept(scale: float) -> np.ndarray:
        k = np.round(np.clip(scale * base, 0, 1) * widths / multiple_of) * multiple_of
        return np.clip(k, np.minimum(floor, widths), widths)

    lo, hi = 0.0, 1.0 / max(base.min(), 1e-9)
    for _ in range(60):   # kept(scale).sum() is non-decreasing in scale
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if kept(mid).sum() < goal else (lo, mid)
    best = min((kept(lo), kept(hi)), key=lambda k: abs(k.sum() - goal))
    return {n: int(k) for n, k in zip(names, best)}


def first_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The first ``nn.Linear`` in `model` (module order) and its name: the layer that reads the last conv."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            return name, m
    raise ValueError(f"{type(model).__name__} has no nn.Linear layer")


# --------------------------------------------------------------------------- targets and summary


def check_targets(
    table: pd.DataFrame,
    *,
    criterion: str = "taylor",
    reference: str = "dense",
    min_flops_ratio: float = 3.0,
    min_params_ratio: float = 4.0,
    min_speedup_per_flops: float = 0.8,
    max_accuracy_drop_points: float = 1.0,
) -> pd.DataFrame:
    """The issue's targets for `criterion` against `reference`, measured, each with True/False.

    `table` is indexed by model name with ``flops_ratio``, ``params_ratio``, ``speedup`` and
    ``accuracy`` (a fraction), e.g. one (form, batch) slice of `side_by_side`.
    """
    row, ref = table.loc[criterion], table.loc[reference]
    drop = 100 * (ref["accuracy"] - row["accuracy"])
    needed_speedup = min_speedup_per_flops * row["flops_ratio"]
    checks = [
        ("FLOPs reduction (x fewer)", f">= {min_flops_ratio:g}", row["flops_ratio"], row["flops_ratio"] >= min_flops_ratio),
        ("parameter reduction (x fewer)", f">= {min_params_ratio:g}", row["params_ratio"],
         row["params_ratio"] >= min_params_ratio),
        ("measured speedup (x faster)", f">= {min_speedup_per_flops:g} x FLOPs ratio = {needed_speedup:.2f}",
         row["speedup"], row["speedup"] >= needed_speedup),
        ("accuracy lost (points)", f"<= {max_accuracy_drop_points:g}", drop, drop <= max_accuracy_drop_points),
    ]
    return pd.DataFrame(checks, columns=["target", "required", "measured", "met"]).set_index("target")


SUMMARY_ENTRY = ("accuracy", "gflops", "params", "size_mb", "latency_ms")


def build_summary(
    profile: str,
    dataset: str,
    model: str,
    table: pd.DataFrame,
    *,
    reference: str = "dense",
    measurement: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``reports/summary.json``'s content from one (form, batch) slice of `side_by_side`.

    `table` is indexed by model name with ``accuracy`` (fraction), ``gflops`` (per image),
    ``params``, ``size_mb``, ``latency_ms`` (per batch) and ``speedup``; every row but `reference`
    becomes ``pruned[name]``.  `measurement` (batch size, threads, form, machine, ...) is stored
    under ``"measurement"`` so the latency can be read correctly.
    """
    def entry(name: str, with_speedup: bool) -> dict[str, Any]:
        r = table.loc[name]
        e = {"accuracy": float(r["accuracy"]), "gflops": float(r["gflops"]), "params": int(r["params"]),
             "size_mb": float(r["size_mb"]), "latency_ms": float(r["latency_ms"])}
        if with_speedup:
            e["speedup"] = float(r["speedup"])
        return e

    summary = {"profile": profile, "dataset": dataset, "model": model, "dense": entry(reference, False),
               "pruned": {name: entry(name, True) for name in table.index if name != reference}}
    if measurement is not None:
        summary["measurement"] = dict(measurement)
    return validate_summary(summary)


def _check_number(where: str, value: Any, *, low: float = 0.0, high: float = math.inf,
                  integer: bool = False, positive: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"{where} = {value!r} must be {'an int' if integer else 'a number'}")
    if not math.isfinite(value) or not low <= value <= high or (positive and value <= 0):
        bound = f"in [{low:g}, {high:g}]" if math.isfinite(high) else ("> 0" if positive else f">= {low:g}")
        raise ValueError(f"{where} = {value!r} must be finite and {bound}"
                         + (" (accuracy is a fraction, not a percentage)" if where.endswith("['accuracy']") else ""))


def _check_entry(where: str, entry: Any, pruned: bool) -> None:
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a dict with {list(SUMMARY_ENTRY)}; got {type(entry).__name__}")
    needed = SUMMARY_ENTRY + (("speedup",) if pruned else ())
    missing = [k for k in needed if k not in entry]
    if missing:
        raise ValueError(f"{where} is missing {missing}")
    _check_number(f"{where}['accuracy']", entry["accuracy"], high=1.0)
    _check_number(f"{where}['gflops']", entry["gflops"], positive=True)
    _check_number(f"{where}['params']", entry["params"], integer=True, positive=True)
    _check_number(f"{where}['size_mb']", entry["size_mb"], positive=True)
    _check_number(f"{where}['latency_ms']", entry["latency_ms"], positive=True)
    if pruned:
        _check_number(f"{where}['speedup']", entry["speedup"], positive=True)


def validate_summary(summary: Any) -> dict[str, Any]:
    """Check `summary` against the schema of ``reports/summary.json``; return it, or raise ``ValueError``.

    Schema: ``{"profile", "dataset", "model": str, "dense": {"accuracy", "gflops", "params",
    "size_mb", "latency_ms"}, "pruned": {criterion: {... the same ..., "speedup"}}}``; accuracy a
    fraction in [0, 1], every number finite, counts and times positive.  Extra keys are allowed.
    """
    if not isinstance(summary, dict):
        raise ValueError(f"summary must be a dict; got {type(summary).__name__}")
    missing = [k for k in ("profile", "dataset", "model", "dense", "pruned") if k not in summary]
    if missing:
        raise ValueError(f"summary is missing {missing}")
    for key in ("profile", "dataset", "model"):
        if not isinstance(summary[key], str) or not summary[key]:
            raise ValueError(f"summary['{key}'] = {summary[key]!r} must be a non-empty string")
    _check_entry("summary['dense']", summary["dense"], pruned=False)
    if not isinstance(summary["pruned"], dict) or not summary["pruned"]:
        raise ValueError("summary['pruned'] must map at least one criterion to its entry")
    for name, entry in summary["pruned"].items():
        _check_entry(f"summary['pruned'][{name!r}]", entry, pruned=True)
    return summary


def write_summary(summary: Mapping[str, Any], path: str | Path | None = None) -> Path:
    """Validate `summary` and write it as JSON (no NaN) to `path` (default ``reports/summary.json``)."""
    summary = validate_summary(dict(summary))
    path = Path(path) if path is not None else reports_dir() / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return path
