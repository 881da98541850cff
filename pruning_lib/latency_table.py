"""Latency tables: what each channel group's width costs in time, measured where the network will run.

FLOPs are not time.  A thin conv runs at fewer GFLOP/s than a wide one, a layer without FLOPs (pooling, ReLU, a
residual addition) still takes time, oneDNN pads channels to the next multiple of 8 or 16, and PyTorch picks
another kernel when a layer's size crosses a threshold: latency is a staircase in the width.  So it is measured,
not modelled.

`latency_table` times the network as it is (the *reference*) and, for every prunable channel group and every
width on a grid (multiples of `step` below the group's width), the network with that one group narrowed
(`surgery.with_widths`: random weights are fine, a dense conv costs the same whatever its weights).  The time a
width saves is measured as a **paired difference**: in every round, the variants and the reference are timed in a
fresh random order, each ``calls`` times, and a variant's saving in that round is the reference's median minus
its own; the table keeps the median over rounds.  Then:

- **ties**: a saving within its own noise (half the interquartile range of its paired differences over the
  rounds, at least their standard error) counts as no saving at all;
- **a monotone envelope**: a narrower width never saves less than a wider one (the staircase's steps are kept,
  its dips, which are noise or a kernel switch we cannot rely on, are not).

Each group's block is timed inside the whole network, so the table holds everything a width changes: the conv
and its folded BatchNorm, the ReLU, the pooling or addition on the same tensor, and the next layer's inputs.  It
is the cost that `plan.widths_for_latency` trades against importance.  `measured_speedup` is the judge: the real
network against its reference, end to end, in one interleaved harness.  Tables are cached on disk under a key that
names the machine, the torch version, the form (PyTorch's deploy form, or a registered runtime such as ONNX
Runtime), batch, threads, the input shape and every conv's width: a second call with the same settings reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from . import runtime
from .checkpoints import atomic_write
from .graph.groups import group_widths
from .measure.deploy import FORMS, deployment_form
from .measure.machine import machine_info
from .measure.runtimes import RUNTIMES, checked_runner
from .surgery import with_widths

__all__ = ["LatencyTable", "cache_dir", "latency_table", "measured_speedup", "table_from_rounds", "time_per_flop",
           "width_grid"]


@dataclass(frozen=True)
class LatencyTable:
    """Milliseconds saved per batch by each width of each group, the others as they are.

    Attributes:
        reference_ms: the network as it is, per batch (median over rounds).
        noise_ms: the typical noise of a saving (the median over variants); each saving below its own noise is 0.
        widths: ``{group: [w, ...]}`` ascending, the group's current width last.
        saved_ms: ``{group: [ms, ...]}``, the same length: time saved at each width (0 at the current one),
            non-increasing in the width.
        settings: form, batch, threads, input shape, step, rounds, calls, machine and torch version.
    """

    reference_ms: float
    noise_ms: float
    widths: dict[str, list[int]]
    saved_ms: dict[str, list[float]]
    settings: dict = field(default_factory=dict)

    def saving(self, group: str, width: int) -> float:
        """Milliseconds saved with `group` at `width` (the nearest measured width at or above it)."""
        widths = self.widths[group]
        i = next((k for k, w in enumerate(widths) if w >= width), len(widths) - 1)
        return self.saved_ms[group][i]


def time_per_flop(table: LatencyTable, flops_per_channel: Mapping[str, float], batch: int) -> pd.DataFrame:
    """Each group cut to half its width (the nearest measured width at or above): the milliseconds the table says
    that saves, the MFLOPs it removes from a batch (`plan.flops_per_channel` gives GFLOPs per image and channel),
    and their ratio.  Where FLOPs predicted time, the last column would be the same for every group."""
    rows = []
    for group, widths in table.widths.items():
        width = widths[-1]
        kept = next(w for w in widths if w >= width // 2)
        mflops = 1e3 * flops_per_channel[group] * (width - kept) * batch
        ms = table.saving(group, kept)
        rows.append({"group": group, "width": width, "cut to": kept, "ms saved": ms, "MFLOPs saved": mflops,
                     "µs per MFLOP": 1e3 * ms / mflops if mflops else float("nan")})
    return pd.DataFrame(rows).set_index("group")


def width_grid(width: int, step: int, min_fraction: float = 0.0) -> list[int]:
    """The widths measured for a group of `width` channels: multiples of `step` below it, at least
    ``min_fraction * width`` (a cut never goes deeper), and `width` itself."""
    if step < 1 or width < 1 or not 0 <= min_fraction < 1:
        raise ValueError(f"width and step must be >= 1 and min_fraction in [0, 1), got {width}, {step}, {min_fraction}")
    return [w for w in range(step, width, step) if w >= min_fraction * width] + [width]


def table_from_rounds(rounds: Sequence[Mapping[str, float]], variants: Mapping[str, tuple[str, int]],
                      widths: Mapping[str, int], settings: Mapping | None = None) -> LatencyTable:
    """A table from timed rounds: each round ``{"reference": ms, variant: ms, ...}`` (per-round medians).

    `variants` maps a variant's name to ``(group, width)``.  Pure: the measuring is `latency_table`'s.
    """
    reference = [r["reference"] for r in rounds]
    measured: dict[str, dict[int, float]] = {g: {w: 0.0} for g, w in widths.items()}
    noises = []
    for name, (group, width) in variants.items():
        differences = [r["reference"] - r[name] for r in rounds]
        noise = _spread(differences)
        noises.append(noise)
        saving = statistics.median(differences)
        measured[group][width] = saving if saving > noise else 0.0       # within the noise: a tie
    grid, saved = {}, {}
    for group, by_width in measured.items():
        ws = sorted(by_width)
        raw = [by_width[w] for w in ws]
        envelope = list(np.maximum.accumulate(raw[::-1])[::-1])          # narrower never saves less
        grid[group], saved[group] = ws, [float(v) for v in envelope]
    noise = statistics.median(noises) if noises else _spread(reference)
    return LatencyTable(float(statistics.median(reference)), float(noise), grid, saved, dict(settings or {}))


def _spread(values: Sequence[float]) -> float:
    """The noise of a median of `values`: half their interquartile range, at least their standard error."""
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4)
    return max((q3 - q1) / 2, statistics.stdev(values) / len(values) ** 0.5)


def cache_dir() -> Path:
    """Where tables are kept: ``$PRUNING_CACHE_DIR``, else ``~/.cache/pruning_lib``."""
    return Path(os.environ.get("PRUNING_CACHE_DIR", Path.home() / ".cache" / "pruning_lib")).expanduser()


def _key(settings: Mapping, convs: Mapping[str, int]) -> str:
    text = json.dumps({"settings": settings, "convs": convs}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _runner(model: nn.Module, x: torch.Tensor, form: str, threads: int) -> Callable[[], object]:
    """One forward pass of `model` on `x` in `form`, as a function of nothing."""
    if form in RUNTIMES:
        run, batch = checked_runner(model, x, form, num_threads=threads), x.numpy()
        return lambda: run(batch)
    deployed = deployment_form(model.eval(), form)
    return lambda: deployed(x)


def _time_rounds(runners: Mapping[str, Callable[[], object]], rounds: int, calls: int, seed: int,
                 progress: bool) -> list[dict[str, float]]:
    """Per round, every runner in a fresh random order, each `calls` times: the median ms of each."""
    order, rng, out = list(runners), random.Random(seed), []
    for run in runners.values():                                        # warm-up
        run()
    for _ in tqdm(range(rounds), desc="latency table", disable=not progress, leave=False):
        rng.shuffle(order)
        times: dict[str, float] = {}
        for name in order:
            samples = []
            for _ in range(calls):
                start = time.perf_counter()
                runners[name]()
                samples.append(1e3 * (time.perf_counter() - start))
            times[name] = statistics.median(samples)
        out.append(times)
    return out


def latency_table(model: nn.Module, input_shape: Sequence[int], *, form: str = "deploy", num_threads: int = 1,
                  step: int = 8, min_fraction: float = 0.0, rounds: int = 7, calls: int = 3, cache: bool = True,
                  seed: int = 0, progress: bool = True) -> LatencyTable:
    """Measure (or read from the cache) the time each width of each prunable group saves, the others as they are.

    Args:
        model: the network as it is now (left unchanged).
        input_shape: the batch to time, ``(N, C, H, W)``.
        form: a PyTorch form of `measure.FORMS` ("deploy": BatchNorm folded, channels-last) or a registered
            runtime ("onnxruntime", "openvino", ...).
        num_threads: threads while timing (as the network will run).
        step: the width grid (8 or 16 match oneDNN's blocked layouts).
        min_fraction: measure no width below this share of a group's width (one cut never goes deeper).
        rounds, calls: interleaved rounds, and calls of each network per round (their median).
        cache: read and write the table under `cache_dir`.
    """
    if form not in FORMS + RUNTIMES:
        raise ValueError(f"unknown form {form!r}; choose one of {FORMS + RUNTIMES}")
    if rounds < 2 or calls < 1:
        raise ValueError(f"rounds must be >= 2 (the noise needs two) and calls >= 1; got {rounds}, {calls}")
    widths = group_widths(model)
    convs = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    info = machine_info()
    settings = {"form": form, "input_shape": list(input_shape), "num_threads": num_threads, "step": step,
                "min_fraction": min_fraction,
                "rounds": rounds, "calls": calls, "processor": info["processor"], "cpus": info["cpu_count"],
                "torch": info["torch"]}
    path = cache_dir() / f"latency-{_key(settings, convs)}.json"
    if cache and path.is_file():
        return LatencyTable(**json.loads(path.read_text()))
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("latency tables are measured on the CPU; move the model to the CPU first")
    x = torch.randn(*input_shape)
    variants = {f"{g}@{w}": (g, w) for g, width in widths.items() for w in width_grid(width, step, min_fraction)
                if w < width}
    with runtime.mode(model, training=False), runtime.num_threads(num_threads), torch.no_grad():
        runners = {"reference": _runner(model, x, form, num_threads)}
        for name, (g, w) in variants.items():
            runners[name] = _runner(with_widths(model, {g: w}), x, form, num_threads)
        timed = _time_rounds(runners, rounds, calls, seed, progress)
    table = table_from_rounds(timed, variants, widths, settings)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: f.write(json.dumps(asdict(table)).encode()))
    return table


def measured_speedup(reference: nn.Module, model: nn.Module, input_shape: Sequence[int], *, form: str = "deploy",
                     num_threads: int = 1, rounds: int = 9, calls: int = 5, seed: int = 0) -> dict[str, float]:
    """How much faster `model` runs than `reference`, both timed in one interleaved harness, end to end.

    Each round times both networks `calls` times in a random order; a round's speedup is the ratio of their medians
    (paired: a slow moment of the machine hits both).  Returns ``speedup`` (the median over rounds), ``low`` (the
    speedup minus its noise: half the interquartile range of the rounds, at least their standard error),
    ``reference_ms`` and ``ms`` (medians per batch).
    """
    x = torch.randn(*input_shape)
    with runtime.mode(reference, training=False), runtime.mode(model, training=False), \
            runtime.num_threads(num_threads), torch.no_grad():
        runners = {"reference": _runner(reference, x, form, num_threads), "model": _runner(model, x, form, num_threads)}
        timed = _time_rounds(runners, rounds, calls, seed, progress=False)
    ratios = [r["reference"] / r["model"] for r in timed]
    speedup = statistics.median(ratios)
    return {"speedup": speedup, "low": speedup - _spread(ratios),
            "reference_ms": statistics.median(r["reference"] for r in timed),
            "ms": statistics.median(r["model"] for r in timed)}
