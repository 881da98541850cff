"""The lessons of the course, measured: each claim of the post against the numbers of this run.

A lesson compares two sides on the **same test images** (for example Prune–Train–Repeat against
one shot).  Its noise is two standard errors of the *paired* difference: for per-image correctness
a_i and b_i (1 = right), the difference d_i = a_i − b_i has mean ``gap`` and standard error
``std(d) / sqrt(n)``; images both models get right (or both wrong) do not add noise.  A lesson
**shows** when its gap is at least its threshold (2 points, or 5 for the criteria) *and* at least
the noise.  The words the notebooks use ("ahead", "tied", "behind") come from `verdict`.

`compare` builds one entry; `criteria_lesson` and `headline_lesson` build the two that check more
than one number.  `course.reports.update_lessons` writes them to ``reports/lessons.json``.
`at_equal_flops` compares two Prune–Train–Repeat runs at the same cost, from their histories.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..recover.history import compare_at_flops

__all__ = ["MET", "MISSED", "WITHIN", "against_limit", "compare", "criteria_lesson", "headline_lesson", "noise_points",
           "overall", "points", "verdict", "with_speedup"]


def _correct(x: Any) -> torch.Tensor:
    t = torch.as_tensor(x).double().flatten()
    if t.numel() == 0 or not bool(((t == 0) | (t == 1)).all()):
        raise ValueError("per-image correctness must be a non-empty vector of 0s and 1s (predictions == targets)")
    return t


def points(correct: Any) -> float:
    """Accuracy in percentage points from per-image correctness (1 = right)."""
    return 100 * float(_correct(correct).mean())


def noise_points(a: Any, b: Any) -> float:
    """Two standard errors of the paired difference of accuracies (points): 2 · std(a − b) / sqrt(n)."""
    a, b = _correct(a), _correct(b)
    if a.shape != b.shape:
        raise ValueError(f"the two sides were measured on different images ({a.numel()} vs {b.numel()})")
    d = a - b
    return 200 * float(d.std(unbiased=True)) / math.sqrt(d.numel()) if d.numel() > 1 else math.inf


def compare(claim: str, sides: Mapping[str, Any], *, threshold_points: float, extra: Mapping | None = None,
            reported_only: bool = False) -> dict[str, Any]:
    """A lesson entry: the first side of `sides` against the second on the same images.

    Args:
        claim: what the post claims, in one sentence.
        sides: ``{label: per-image correctness}``, exactly two, the side claimed to be ahead first.
        threshold_points: the smallest gap that counts (e.g. 2 points).
        extra: more measured numbers to store under ``measured`` (FLOPs, steps, ...).
        reported_only: the lesson is reported whatever it shows (random catching up).

    Returns:
        ``{"claim", "measured": {label: accuracy points, ...}, "gap_points", "noise_points",
        "threshold_points", "shows", "reported_only"}``; ``shows`` is computed, never typed.
    """
    if len(sides) != 2:
        raise ValueError(f"a lesson compares exactly two sides; got {list(sides)}")
    (la, a), (lb, b) = sides.items()
    gap = points(a) - points(b)
    noise = noise_points(a, b)
    return {"claim": claim, "measured": {la: points(a), lb: points(b), **dict(extra or {})},
            "gap_points": gap, "noise_points": noise, "threshold_points": float(threshold_points),
            "shows": bool(gap >= threshold_points and gap >= noise), "reported_only": bool(reported_only)}


def criteria_lesson(curves: Mapping[str, Mapping[float, Any]], rho: Mapping[str, float], *, middle: float,
                    threshold_points: float = 5.0, cheap: Sequence[str] | None = None) -> dict[str, Any]:
    """The criteria differ: Taylor against random, one shot without fine-tuning, several amounts.

    Args:
        curves: ``{"taylor": {amount: correctness}, "random": {amount: correctness}}`` on the same images.
        rho: Spearman ρ against the oracle (all layers, L2-normalised) of each criterion.
        middle: the amount where Taylor must be `threshold_points` ahead.
        cheap: the criteria Taylor's ρ must beat (default: every key of `rho` but the oracle).

    Shows when Taylor is ahead by at least the threshold and the noise at `middle`, never behind
    random by more than the noise at any amount, and has the highest ρ of the cheap criteria.
    """
    taylor, random = curves["taylor"], curves["random"]
    amounts = sorted(taylor)
    per_amount = {f"{a:g}": {"taylor": points(taylor[a]), "random": points(random[a]),
                             "noise_points": noise_points(taylor[a], random[a])} for a in amounts}
    never_behind = all(v["taylor"] - v["random"] >= -v["noise_points"] for v in per_amount.values())
    mid = per_amount[f"{middle:g}"]
    gap = mid["taylor"] - mid["random"]
    cheap = [c for c in (cheap or rho) if c != "oracle"]
    best = max(cheap, key=lambda c: rho[c])
    return {"claim": "Criteria differ: Taylor's one-shot accuracy is far above random's at a middle amount and never "
                     "below it beyond the noise, and Taylor's ρ against the oracle is the highest of the cheap criteria",
            "measured": {"amounts": per_amount, "middle_amount": middle, "rho": {c: float(rho[c]) for c in cheap},
                         "best_rho": best, "never_behind": never_behind},
            "gap_points": gap, "noise_points": mid["noise_points"], "threshold_points": float(threshold_points),
            "shows": bool(gap >= threshold_points and gap >= mid["noise_points"] and never_behind and best == "taylor"),
            "reported_only": False}


#: The three outcomes of a claim judged against a limit with its noise.
MET, WITHIN, MISSED = "met", "within the noise", "missed"


def against_limit(value: float, noise: float, limit: float, *, at_least: bool) -> str:
    """Is `value` (± `noise`) at least (or at most) `limit`?  ``"met"`` when the whole interval is on the right
    side of the limit, ``"missed"`` when it is all on the wrong side, ``"within the noise"`` when it straddles it."""
    low, high = value - noise, value + noise
    if at_least:
        return MET if low >= limit else MISSED if high < limit else WITHIN
    return MET if high <= limit else MISSED if low > limit else WITHIN


def overall(outcomes: Sequence[str]) -> str:
    """Several checks together: missed if any is missed, met if all are met, else within the noise."""
    return MISSED if MISSED in outcomes else MET if all(o == MET for o in outcomes) else WITHIN


def headline_lesson(dense: Any, pruned: Any, *, flops_ratio: float, params_ratio: float,
                    speedup: float | None = None, speedup_noise: float = 0.0, min_speedup: float = 3.0,
                    min_params_ratio: float = 4.0, max_points_lost: float = 1.0) -> dict[str, Any]:
    """The post's headline, judged on its own claim: the pruned network is at least `min_speedup` times faster
    (measured, ± `speedup_noise`: the spread of the speedup over the harness's rounds), has at least
    `min_params_ratio` times fewer parameters (counted: no noise), and lost at most `max_points_lost` points of test
    accuracy (± the paired noise of the two networks on the same images).

    Each check has three outcomes (`against_limit`): met beyond the noise, missed beyond it, or within the noise;
    ``outcome`` combines them (`overall`) and ``shows`` is True only when it is "met".  `speedup` may come later
    (notebook 04: `with_speedup`); until then the speed is "not measured" and the entry does not show.  How well
    FLOPs predict time is not part of the claim: ``speedup_per_flops`` is reported beside it as a number of its own.
    ``gap_points`` is the accuracy *lost* (dense − pruned).  This noise is the test set's sampling noise only;
    the run-to-run noise of training (seeds, machines) is what the calibration over seeds shows.
    """
    lost = points(dense) - points(pruned)
    noise = noise_points(dense, pruned)
    checks = {"speedup": "not measured" if speedup is None else against_limit(speedup, speedup_noise, min_speedup,
                                                                             at_least=True),
              "params_ratio": against_limit(params_ratio, 0.0, min_params_ratio, at_least=True),
              "points_lost": against_limit(lost, noise, max_points_lost, at_least=False)}
    outcome = overall([c if c != "not measured" else WITHIN for c in checks.values()])
    return {"claim": f"Prune–Train–Repeat with Taylor: >= {min_speedup:g}x faster (measured), >= {min_params_ratio:g}x "
                     f"fewer parameters, <= {max_points_lost:g} point of accuracy lost",
            "measured": {"dense": points(dense), "pruned": points(pruned), "flops_ratio": float(flops_ratio),
                         "params_ratio": float(params_ratio), "speedup": None if speedup is None else float(speedup),
                         "speedup_noise": float(speedup_noise),
                         "speedup_per_flops": None if speedup is None else float(speedup) / float(flops_ratio),
                         "checks": checks, "min_speedup": float(min_speedup),
                         "min_params_ratio": float(min_params_ratio), "max_points_lost": float(max_points_lost)},
            "gap_points": lost, "noise_points": noise, "threshold_points": float(max_points_lost),
            "outcome": outcome, "shows": outcome == MET, "reported_only": False}


def with_speedup(entry: Mapping[str, Any], speedup: float, noise: float = 0.0) -> dict[str, Any]:
    """A copy of a `headline_lesson` entry made without a speedup (notebook 03's), with a measured `speedup` (± its
    `noise`) added and its checks, ``outcome`` and ``shows`` computed again (as notebook 04 does)."""
    measured = dict(entry["measured"], speedup=float(speedup), speedup_noise=float(noise),
                    speedup_per_flops=float(speedup) / entry["measured"]["flops_ratio"])
    measured["checks"] = dict(measured["checks"], speedup=against_limit(speedup, noise, measured.get("min_speedup", 3.0),
                                                                        at_least=True))
    outcome = overall(list(measured["checks"].values()))
    return {**entry, "measured": measured, "outcome": outcome, "shows": outcome == MET}


def verdict(entry: Mapping[str, Any], ahead: str = "ahead", behind: str = "behind") -> str:
    """The words for an entry's gap: "ahead by 3.1 points (noise ±1.2)", "tied (...)" or "behind by ...".

    Ahead means beyond both the noise and zero; tied means within the noise.
    """
    gap, noise = entry["gap_points"], entry["noise_points"]
    d = 2 if f"{abs(gap):.1f}" == f"{noise:.1f}" else 1          # never "ahead by 1.0 (noise ±1.0)"
    if abs(gap) <= noise:
        word = f"tied ({gap:+.{d}f} points, within the noise of ±{noise:.{d}f})"
    else:
        word = f"{ahead if gap > 0 else behind} by {abs(gap):.{d}f} points (noise ±{noise:.{d}f}), just beyond the noise" \
            if d == 2 else f"{ahead if gap > 0 else behind} by {abs(gap):.1f} points (noise ±{noise:.1f})"
    return word


def at_equal_flops(histories: Mapping[str, pd.DataFrame], mflops: Sequence[float] | None = None, *, n_images: int,
                   levels: int = 4) -> pd.DataFrame:
    """Two Prune–Train–Repeat runs at the same cost: each one's validation accuracy after the fine-tune at each of
    `mflops` (MFLOPs per image), interpolated between its iterations (`recover.history.compare_at_flops`).

    With ``mflops=None``, `levels` costs spread evenly on a log scale over the range both runs passed through
    (two significant digits), so any network size gets a table.  Returns one row per level both runs passed
    through (none: an empty table), with each run's accuracy (points), their gap and its noise: two standard errors
    of the difference of two *independent* accuracies on `n_images` images each (two runs' validation accuracies
    at interpolated points cannot be paired image by image).
    """
    if len(histories) != 2:
        raise ValueError(f"at_equal_flops compares exactly two runs; got {list(histories)}")
    (a, ha), (b, hb) = histories.items()
    low = max(ha["gflops"].min(), hb["gflops"].min())
    high = min(ha["gflops"].max(), hb["gflops"].max())
    if mflops is None:
        mflops = sorted({float(f"{1e3 * g:.2g}") for g in np.geomspace(high, low, levels)} if low < high else [],
                        reverse=True)
    chosen = [m / 1e3 for m in mflops if low - 1e-12 <= m / 1e3 <= high + 1e-12]
    columns = [f"{a} %", f"{b} %", f"{a} − {b} (points)", "noise (±points)"]
    if not chosen:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="at"))
    wide = compare_at_flops(histories, chosen).pivot(index="gflops", columns="criterion", values="accuracy")
    wide = wide.sort_index(ascending=False)
    pa, pb = wide[a], wide[b]
    table = pd.DataFrame(dict(zip(columns, (100 * pa, 100 * pb, 100 * (pa - pb),
                                            200 * ((pa * (1 - pa) + pb * (1 - pb)) / n_images) ** 0.5))))
    table.index = pd.Index([f"{1e3 * g:g} MFLOPs" for g in wide.index], name="at")
    return table
