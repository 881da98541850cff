"""Reading a Prune–Train–Repeat history: filters left per layer, and runs compared at equal FLOPs.

A history (`iterative.prune_train_repeat`'s, or one read back from ``reports/iterative.json``) has one
row per iteration (row 0: the unpruned model) and a ``filters:<conv>`` column per conv.
`speedup_sweep` rebuilds every iteration's architecture and times it against the dense model.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from torch import nn
from tqdm.auto import tqdm

from ..graph.groups import group_widths
from ..measure.comparison import ratio, timed
from ..measure.counting import count_flops, count_parameters
from ..surgery import with_widths

__all__ = ["compare_at_flops", "history_widths", "layer_widths", "speedup_sweep"]


def layer_widths(history: pd.DataFrame, *, relative: bool = True) -> pd.DataFrame:
    """Filters left per layer (rows, forward order) at every iteration (columns); fractions of row 0 if `relative`."""
    cols = [c for c in history.columns if c.startswith("filters:")]
    table = history.set_index("iteration")[cols].T
    table.index = [c.removeprefix("filters:") for c in cols]
    return table.div(table.iloc[:, 0], axis=0) if relative else table


def compare_at_flops(histories: Mapping[str, pd.DataFrame], gflops: Sequence[float],
                     column: str = "accuracy_after_finetune") -> pd.DataFrame:
    """Each run's `column` and parameters at the same FLOPs, interpolated linearly between iterations.

    Returns one row per (criterion, gflops) with ``accuracy`` and ``params``; NaN where a run
    never reached that FLOPs level (outside its range).
    """
    rows = []
    for name, h in histories.items():
        h = h.sort_values("gflops")
        x = h["gflops"].to_numpy(float)
        for g in gflops:
            inside = x.min() - 1e-12 <= g <= x.max() + 1e-12
            rows.append({"criterion": name, "gflops": g,
                         "accuracy": float(np.interp(g, x, h[column].to_numpy(float))) if inside else math.nan,
                         "params": float(np.interp(g, x, h["params"].to_numpy(float))) if inside else math.nan})
    return pd.DataFrame(rows)


def history_widths(history: pd.DataFrame) -> list[dict[str, int]]:
    """The filters left per conv at each iteration: ``[{conv: n}, ...]``, one dict per row of `history`."""
    cols = [c for c in history.columns if c.startswith("filters:")]
    if not cols:
        raise ValueError("history has no 'filters:<conv>' columns; pass a prune_train_repeat history "
                         "or one from read_iterative_report")
    return [{c.removeprefix("filters:"): int(row[c]) for c in cols} for _, row in history.iterrows()]


def speedup_sweep(
    template: nn.Module,
    histories: Mapping[str, pd.DataFrame],
    input_shape: Sequence[int],
    *,
    forms: Sequence[str] = ("eager", "deploy"),
    rounds: int = 1,
    progress: bool = False,
    **timing: Any,
) -> pd.DataFrame:
    """Measured speedup against FLOPs reduction for every iteration of notebook 03's runs.

    `timing` goes to `measure.measure_latency` (``num_threads``, ``device``, ``min_run_time``, ...);
    the architectures are interleaved over `rounds` and the median kept.

    Each iteration's architecture is rebuilt from its ``filters:<conv>`` widths on `template`
    (random weights; see `surgery.with_widths`) and timed at ``input_shape`` (batch included)
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
                archs[key] = with_widths(template, widths).to(timing.get("device", "cpu")).eval()
            rows.append({"criterion": criterion, "iteration": int(rec["iteration"]),
                         "fraction_removed": float(rec.get("fraction_removed", math.nan)), "key": key})
    dense_key = tuple(sorted(group_widths(template).items()))
    archs.setdefault(dense_key, copy.deepcopy(template).to(timing.get("device", "cpu")).eval())
    static = {k: {"gflops": count_flops(m, (1, *shape[1:])) / 1e9, "params": count_parameters(m)}
              for k, m in archs.items()}
    out = []
    for form in tqdm(forms, disable=not progress, desc="speedup sweep"):
        times = timed(archs, shape, form, rounds, **timing)
        dense = times[dense_key]["latency_ms"]
        for r in rows:
            t, s = times[r["key"]], static[r["key"]]
            speedup = ratio(dense, t["latency_ms"])
            flops_ratio = ratio(static[dense_key]["gflops"], s["gflops"])
            out.append({"form": form, "criterion": r["criterion"], "iteration": r["iteration"],
                        "fraction_removed": r["fraction_removed"], "gflops": s["gflops"], "params": s["params"],
                        "flops_ratio": flops_ratio, "latency_ms": t["latency_ms"],
                        "latency_iqr_ms": t["latency_iqr_ms"], "speedup": speedup,
                        "speedup_per_flops": speedup / flops_ratio, "batch": shape[0]})
    return pd.DataFrame(out)
