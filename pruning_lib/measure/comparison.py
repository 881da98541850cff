"""Comparing models: one table of parameters, size, FLOPs and latency with ratios against a reference.

- `compare`: every model timed in one interleaved harness (`timed`, on `harness.interleaved`), its parameters,
  size and FLOPs counted, ratios against the reference.
- `side_by_side`: `compare` at several batch sizes and forms, with the speedup's spread over the rounds.
- `batch_sweep`: latency, throughput and speedup against the batch size.

Ratios are written so that **bigger than 1 is better than the reference**: ``speedup`` = reference
latency / latency, ``flops_ratio`` = reference FLOPs / FLOPs, ...; ``speedup_per_flops`` =
speedup / flops_ratio is 1 when the time falls exactly with the FLOPs.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import runtime
from .checks import make_input, validate_input_shape, validate_num_threads
from .counting import count_flops, count_parameters, size_on_disk_mb
from .harness import interleaved
from .latency import forward_runner

__all__ = ["batch_sweep", "compare", "ratio", "runtime_overview", "side_by_side", "speedup_overview", "timed"]


def ratio(reference: float, value: float) -> float:
    """``reference / value``, with ``inf`` for x/0 and ``nan`` for 0/0."""
    if value == 0:
        return math.nan if reference == 0 else math.inf
    return reference / value


def _validate_compare_args(
    models: dict[str, nn.Module], reference: str | None, accuracy: dict[str, float] | None
) -> str:
    """Check ``compare``'s arguments and return the reference name."""
    if not isinstance(models, dict) or not models:
        raise ValueError("models must be a non-empty dict like {'original': model, 'pruned': pruned}")
    for name, model in models.items():
        if not isinstance(model, nn.Module):
            raise TypeError(f"models[{name!r}] is a {type(model).__name__}, not an nn.Module")
    reference = next(iter(models)) if reference is None else reference
    if reference not in models:
        raise ValueError(f"reference {reference!r} is not in models; choose one of {list(models)}")
    unknown = set(accuracy or {}) - set(models)
    if unknown:
        raise ValueError(f"accuracy has names {sorted(unknown)} that are not in models {list(models)}")
    return reference


def compare(
    models: dict[str, nn.Module],
    input_shape: Sequence[int],
    *,
    reference: str | None = None,
    num_threads: int | None = None,
    device: str | torch.device = "cpu",
    min_run_time: float = 1.0,
    accuracy: dict[str, float] | None = None,
    compiled: bool = False,
    form: str = "eager",
    rounds: int = 5,
) -> pd.DataFrame:
    """Profile several models and compare them with a reference model.

    Args:
        models: name -> model, all already on ``device``, timed in one interleaved harness (`timed`).
        input_shape: batch shape for latency, e.g. ``(1, 3, 224, 224)``; FLOPs are per image.
        reference: the name to compare against; default the first key of ``models``.
        accuracy: optional name -> accuracy; adds an ``accuracy`` column (NaN if missing).
        compiled: time every model through ``torch.compile`` (see `measure_latency`).
        form: time every model in this form (one of :data:`FORMS`, see `measure_latency`);
            parameters, size and FLOPs are always those of the models as given.
        min_run_time, rounds: about how long each model is timed per round (seconds), and how many rounds.

    Returns:
        A DataFrame indexed by name with columns ``params``, ``size_mb``, ``gflops``,
        ``latency_ms``, ``latency_iqr_ms``, ``throughput`` and four ratios, each written so
        that **bigger than 1 means better than the reference** (1.0 on the reference row):
        ``speedup`` = ref latency / latency ("x faster"), ``size_ratio`` = ref size / size
        ("x smaller"), ``flops_ratio`` = ref FLOPs / FLOPs ("x fewer FLOPs"),
        ``params_ratio`` = ref params / params ("x fewer parameters").
    """
    reference = _validate_compare_args(models, reference, accuracy)
    shape = tuple(input_shape)
    times = timed(models, shape, form, rounds, num_threads=num_threads, device=device, min_run_time=min_run_time,
                  compiled=compiled)
    rows = {}
    for name, model in models.items():
        latency = times[name]["latency_ms"]
        rows[name] = {"params": count_parameters(model), "size_mb": size_on_disk_mb(model),
                      "gflops": count_flops(model, (1, *shape[1:])) / 1e9, "latency_ms": latency,
                      "latency_iqr_ms": times[name]["latency_iqr_ms"], "throughput": shape[0] / (latency / 1e3)}
    df = pd.DataFrame.from_dict(rows, orient="index")
    ref = df.loc[reference]
    for column, source in [("speedup", "latency_ms"), ("size_ratio", "size_mb"),
                           ("flops_ratio", "gflops"), ("params_ratio", "params")]:
        df[column] = [ratio(ref[source], v) for v in df[source]]
    if accuracy is not None:
        df["accuracy"] = [accuracy.get(name, math.nan) for name in df.index]
    df.attrs["rounds"] = {name: t["rounds"] for name, t in times.items()}
    return df


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
    forms_of: Mapping[str, Sequence[str]] | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """:func:`compare` at each batch size and form: the models timed in one interleaved harness per (form, batch).

    Each round runs every model in a random order (`harness.interleaved`), so a slow moment of the machine hits
    all of them.  ``latency_ms`` is the median over rounds, ``latency_iqr_ms`` the interquartile range of the
    rounds; ``speedup_min`` and ``speedup_max`` are the lowest and highest speedup of a single round (the ratio of
    the two medians in that round): the spread of the speedup from one measurement to the next.

    Args:
        image_shape: one image, ``(C, H, W)``; FLOPs are per image, latency per batch.
        forms_of: ``{model: forms}`` for a model timed in some of `forms` only (a network that is never
            exported, say); every other model, and always the reference, is timed in every form.

    Returns:
        One row per (form, batch, model) with columns ``form``, ``batch``, ``model``, ``params``,
        ``size_mb``, ``gflops``, ``accuracy``, ``latency_ms``, ``latency_iqr_ms``, ``throughput``
        (images/s), ``speedup`` (of the median latencies), ``speedup_min``, ``speedup_max``, ``flops_ratio``, ``params_ratio``, ``size_ratio`` (reference / model:
        bigger is better) and ``speedup_per_flops`` (speedup / flops_ratio).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1; got {rounds}")
    reference = reference or next(iter(models))
    unknown = set(forms_of or {}) - set(models)
    if unknown or reference in (forms_of or {}):
        raise ValueError(f"forms_of names {sorted(unknown) or [reference]}: only models other than the reference "
                         f"{reference!r} may skip forms")
    jobs = [(form, b) for form in forms for b in batches]
    frames = []
    for form, b in tqdm(jobs, disable=not progress, desc="side by side"):
        here = {k: m for k, m in models.items() if form in (forms_of or {}).get(k, forms)}
        df = compare(here, (b, *image_shape), reference=reference, num_threads=num_threads, device=device,
                     min_run_time=min_run_time, form=form, rounds=rounds)
        per_round = df.attrs["rounds"]                  # paired: each round's ratio of the two medians
        ratios = {name: [a / m for a, m in zip(per_round[reference], per_round[name])] for name in df.index}
        df["speedup_min"] = [min(ratios[name]) for name in df.index]
        df["speedup_max"] = [max(ratios[name]) for name in df.index]
        df["speedup_per_flops"] = df["speedup"] / df["flops_ratio"]
        df["accuracy"] = [(accuracy or {}).get(name, math.nan) for name in df.index]
        frames.append(df.rename_axis("model").reset_index().assign(form=form, batch=b))
    out = pd.concat(frames, ignore_index=True)
    first = ["form", "batch", "model", "params", "size_mb", "gflops", "accuracy", "latency_ms", "latency_iqr_ms",
             "throughput", "speedup", "speedup_min", "speedup_max", "flops_ratio", "speedup_per_flops", "params_ratio",
             "size_ratio"]
    return out[first]


def timed(models: Mapping[Any, nn.Module], shape: tuple[int, ...], form: str, rounds: int, *,
          num_threads: int | None = None, device: str | torch.device = "cpu", min_run_time: float = 1.0,
          compiled: bool = False, **unused: Any) -> dict[Any, dict[str, Any]]:
    """Every model timed in one interleaved harness (`harness.interleaved`): `rounds` rounds in a random order, each
    model about `min_run_time` seconds per round (the median of its calls).  Returns ``{key: {"latency_ms": median over rounds,
    "latency_iqr_ms": interquartile range of the rounds, "rounds": [per-round medians]}}``."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1; got {rounds}")
    threads = validate_num_threads(num_threads)
    first = next(iter(models.values()))
    x = make_input(first, validate_input_shape(shape), runtime.resolve_device(first, device))
    with contextlib.ExitStack() as stack:
        for m in models.values():
            stack.enter_context(runtime.mode(m, training=False))
        stack.enter_context(runtime.num_threads(threads))
        stack.enter_context(torch.no_grad())
        runners = {k: forward_runner(m, x, form, threads, compiled=compiled) for k, m in models.items()}
        calls = {}
        for k, run in runners.items():                    # warm-up (twice when compiled), and each one's calls
            for _ in range(2 if compiled else 1):
                run()
            start = time.perf_counter()
            run()
            once = time.perf_counter() - start
            calls[k] = int(min(1000, max(1, min_run_time / max(once, 1e-6))))
        out = interleaved(runners, rounds=rounds, calls=calls)
    result = {}
    for k in models:
        values = [r[k] for r in out]
        q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
        result[k] = {"latency_ms": statistics.median(values), "latency_iqr_ms": q3 - q1, "rounds": values}
    return result


def batch_sweep(
    models: Mapping[str, nn.Module],
    image_shape: Sequence[int],
    batches: Sequence[int],
    *,
    forms: Sequence[str] = ("eager", "deploy"),
    reference: str | None = None,
    rounds: int = 1,
    progress: bool = False,
    **timing: Any,
) -> pd.DataFrame:
    """Latency, throughput and speedup of each model at each batch size and form.

    `timing` goes to `measure_latency` (``num_threads``, ``device``, ``min_run_time``, ...); the
    models are interleaved over `rounds` and the median kept.

    Returns:
        One row per (form, batch, model): ``latency_ms`` (per batch), ``latency_iqr_ms``,
        ``ms_per_image``, ``throughput`` (images/s), ``speedup`` (reference latency / latency, same
        batch and form), ``flops_ratio`` (reference FLOPs / FLOPs) and ``speedup_per_flops``.
    """
    reference = reference or next(iter(models))
    flops = {k: count_flops(m, (1, *image_shape)) for k, m in models.items()}
    rows = []
    jobs = [(form, b) for form in forms for b in batches]
    for form, b in tqdm(jobs, disable=not progress, desc="batch sweep"):
        times = timed(models, (b, *image_shape), form, rounds, **timing)
        for name, t in times.items():
            speedup = ratio(times[reference]["latency_ms"], t["latency_ms"])
            fewer = ratio(flops[reference], flops[name])
            rows.append({"form": form, "batch": b, "model": name, "latency_ms": t["latency_ms"],
                         "latency_iqr_ms": t["latency_iqr_ms"], "ms_per_image": t["latency_ms"] / b,
                         "throughput": b / (t["latency_ms"] / 1e3), "speedup": speedup, "flops_ratio": fewer,
                         "speedup_per_flops": speedup / fewer})
    return pd.DataFrame(rows)


def speedup_overview(table: pd.DataFrame, *, form: str, batch: int, forms: Sequence[str] = ("eager", "deploy")) -> pd.DataFrame:
    """A `side_by_side` table as one row per model: accuracy, parameters, MFLOPs, size on disk, latency and the
    FLOPs and parameter ratios at `form` and `batch`; the spread of that speedup over the rounds; and the speedup
    in each of `forms` at every batch the table has."""
    main = table[(table["form"] == form) & (table["batch"] == batch)].set_index("model")
    overview = main[["accuracy", "params", "gflops", "size_mb", "latency_ms", "flops_ratio", "params_ratio"]].copy()
    overview["gflops"] *= 1e3
    overview = overview.rename(columns={"gflops": "MFLOPs", "latency_ms": f"ms / batch of {batch}, {form}"})
    overview[f"spread of the speedup, {form}, batch {batch}"] = [f"{lo:.2f}–{hi:.2f}" for lo, hi in
                                                                 zip(main["speedup_min"], main["speedup_max"])]
    speedups = table[table["form"].isin(list(forms))].pivot_table(index="model", columns=["form", "batch"],
                                                                  values="speedup", sort=False).round(2)
    for (f, b), column in speedups.items():
        overview[f"speedup, {f}, batch {b}"] = column
    return overview


def runtime_overview(table: pd.DataFrame, models: Sequence[str], *, reference: str = "dense",
                     latency_of: Sequence[str] = ("dense", "taylor")) -> pd.DataFrame:
    """One row per (batch, form) of a `side_by_side` table: the latency of the `latency_of` models, then, for
    every other model of `models`, its speedup over `reference` and that speedup divided by its FLOPs ratio."""
    rows = table[table["model"].isin(list(models))]
    wide = {v: rows.pivot_table(index=["batch", "form"], columns="model", values=v, sort=False)
            for v in ("latency_ms", "speedup", "speedup_per_flops")}
    return pd.DataFrame({**{f"{m} ms": wide["latency_ms"][m] for m in latency_of},
                         **{f"{m} speedup{what}": wide[v][m] for m in models if m != reference
                            for what, v in (("", "speedup"), (" / FLOPs ratio", "speedup_per_flops"))}})
