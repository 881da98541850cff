"""The lessons of the course, measured: each claim of the post against the numbers of this run.

A lesson compares two sides on the **same test images** (for example Prune–Train–Repeat against
one shot).  Its noise is two standard errors of the *paired* difference: for per-image correctness
a_i and b_i (1 = right), the difference d_i = a_i − b_i has mean ``gap`` and standard error
``std(d) / sqrt(n)``; images both models get right (or both wrong) do not add noise.

That noise is **the test set's** only: how much the gap would move on other test images drawn alike.  It does
not hold the run-to-run noise of training (another seed draws other images, another head and other batches;
another machine rounds differently, and training amplifies it), which only the calibration over seeds measures
(``benchmarks/calibrate_lessons.py``; `course.calibration.lesson_over_seeds` reads it back).  Every verdict says
which noise it used.

A claim "A beats B by at least the threshold" (2 points, or 5 for the criteria) has **three outcomes**
(`against_limit`, `outcome`): *met* when the whole interval gap ± noise is at or above the threshold, *missed*
when it is all below, *within the noise* when it straddles the threshold.  A lesson **shows** when it is met.
`judged` says the outcome in words, with the interval; `verdict` says where the gap stands against zero
("ahead", "tied", "behind"), with the noise it used.

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

__all__ = ["MET", "MISSED", "TEST_NOISE", "WITHIN", "against_limit", "at_equal_flops", "compare", "criteria_lesson",
           "equal_cost", "headline_lesson", "judged", "noise_points", "outcome", "overall", "points", "together",
           "verdict", "with_speedup"]

#: The three outcomes of a claim judged against a limit with its noise.
MET, WITHIN, MISSED = "met", "within the noise", "missed"

#: The noise of a gap measured on the same test images (two standard errors of the paired difference): the words
#: a verdict prints beside it.  Stored in each entry as ``noise_kind``.
TEST_NOISE = "the test set's noise"


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
        ``{"claim", "measured": {label: accuracy points, ...}, "gap_points", "noise_points", "noise_kind",
        "threshold_points", "outcome", "shows", "reported_only"}``: ``outcome`` is the claim against the
        threshold with the test set's noise (`against_limit`: "met", "missed" or "within the noise"), ``shows`` is
        True when it is met; both computed, never typed.
    """
    if len(sides) != 2:
        raise ValueError(f"a lesson compares exactly two sides; got {list(sides)}")
    (la, a), (lb, b) = sides.items()
    gap = points(a) - points(b)
    noise = noise_points(a, b)
    result = against_limit(gap, noise, float(threshold_points), at_least=True)
    return {"claim": claim, "measured": {la: points(a), lb: points(b), **dict(extra or {})},
            "gap_points": gap, "noise_points": noise, "noise_kind": TEST_NOISE,
            "threshold_points": float(threshold_points), "outcome": result, "shows": result == MET,
            "reported_only": bool(reported_only)}


def criteria_lesson(curves: Mapping[str, Mapping[float, Any]], rho: Mapping[str, float], *, middle: float,
                    threshold_points: float = 5.0, cheap: Sequence[str] | None = None,
                    mflops: Mapping[str, Mapping[float, float]] | None = None) -> dict[str, Any]:
    """The criteria differ: Taylor against random, one shot without fine-tuning, several amounts.

    Args:
        curves: ``{"taylor": {amount: correctness}, "random": {amount: correctness}}`` on the same images.
        rho: Spearman ρ against the oracle (all layers, L2-normalised) of each criterion.
        middle: the amount where Taylor must be `threshold_points` ahead.
        cheap: the criteria Taylor's ρ must beat (default: every key of `rho` but the oracle).
        mflops: ``{"taylor": {amount: MFLOPs per image}, "random": {...}}`` of the pruned networks (optional).
            The same share of filters removed is not the same computation: with it, the entry also holds
            ``measured["equal_cost"]``, Taylor at `middle` against the random network of the curve that has the
            fewest MFLOPs still at least Taylor's (random gets at least Taylor's computation: the comparison
            favours random), its gap and noise on the same images; reported beside the claim, not judged.

    Three outcomes (`outcome`): met when Taylor's gap at `middle` is at least the threshold beyond the test set's
    noise, Taylor is never behind random beyond the noise at any amount, and Taylor's ρ is the highest of the cheap
    criteria; missed when one of them fails beyond the noise; else within the noise.
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
    measured = {"amounts": per_amount, "middle_amount": middle, "rho": {c: float(rho[c]) for c in cheap},
                "best_rho": best, "never_behind": never_behind}
    if mflops is not None:
        for side in ("taylor", "random"):
            for a in amounts:
                per_amount[f"{a:g}"][f"{side}_mflops"] = float(mflops[side][a])
        measured["equal_cost"] = _equal_cost(taylor[middle], float(mflops["taylor"][middle]), random, mflops["random"])
    result = overall([against_limit(gap, mid["noise_points"], float(threshold_points), at_least=True),
                      MET if never_behind else MISSED, MET if best == "taylor" else MISSED])
    return {"claim": "Criteria differ: Taylor's one-shot accuracy is far above random's at a middle amount and never "
                     "below it beyond the noise, and Taylor's ρ against the oracle is the highest of the cheap criteria",
            "measured": measured, "gap_points": gap, "noise_points": mid["noise_points"], "noise_kind": TEST_NOISE,
            "threshold_points": float(threshold_points), "outcome": result, "shows": result == MET,
            "reported_only": False}


def _equal_cost(taylor: Any, taylor_mflops: float, random: Mapping[float, Any],
                random_mflops: Mapping[float, float]) -> dict[str, Any] | None:
    """Taylor's network against the random one with the fewest MFLOPs at least Taylor's (None if none has)."""
    richer = [a for a in random if random_mflops[a] >= taylor_mflops]
    if not richer:
        return None
    a = min(richer, key=lambda x: random_mflops[x])
    return {"taylor_mflops": taylor_mflops, "random_amount": float(a), "random_mflops": float(random_mflops[a]),
            "taylor": points(taylor), "random": points(random[a]), "gap_points": points(taylor) - points(random[a]),
            "noise_points": noise_points(taylor, random[a])}


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
    result = overall([c if c != "not measured" else WITHIN for c in checks.values()])
    return {"claim": f"Prune–Train–Repeat with Taylor: >= {min_speedup:g}x faster (measured), >= {min_params_ratio:g}x "
                     f"fewer parameters, <= {max_points_lost:g} point of accuracy lost",
            "measured": {"dense": points(dense), "pruned": points(pruned), "flops_ratio": float(flops_ratio),
                         "params_ratio": float(params_ratio), "speedup": None if speedup is None else float(speedup),
                         "speedup_noise": float(speedup_noise),
                         "speedup_per_flops": None if speedup is None else float(speedup) / float(flops_ratio),
                         "checks": checks, "min_speedup": float(min_speedup),
                         "min_params_ratio": float(min_params_ratio), "max_points_lost": float(max_points_lost)},
            "gap_points": lost, "noise_points": noise, "noise_kind": TEST_NOISE,
            "threshold_points": float(max_points_lost), "outcome": result, "shows": result == MET,
            "reported_only": False}


def with_speedup(entry: Mapping[str, Any], speedup: float, noise: float = 0.0) -> dict[str, Any]:
    """A copy of a `headline_lesson` entry made without a speedup (notebook 03's), with a measured `speedup` (± its
    `noise`) added and its checks, ``outcome`` and ``shows`` computed again (as notebook 04 does)."""
    measured = dict(entry["measured"], speedup=float(speedup), speedup_noise=float(noise),
                    speedup_per_flops=float(speedup) / entry["measured"]["flops_ratio"])
    measured["checks"] = dict(measured["checks"], speedup=against_limit(speedup, noise, measured.get("min_speedup", 3.0),
                                                                        at_least=True))
    result = overall(list(measured["checks"].values()))
    return {**entry, "measured": measured, "outcome": result, "shows": result == MET}


def _noise(entry: Mapping[str, Any]) -> float:
    """An entry's noise in points (None, as lessons.json writes an infinite noise, is infinite)."""
    noise = entry.get("noise_points")
    return math.inf if noise is None else float(noise)


def together(entry: Mapping[str, Any], other: Mapping[str, Any], label: str) -> dict[str, Any]:
    """`entry` judged together with `other`, the same claim against a second side (e.g. from scratch with 3x the
    steps): a copy of `entry` that also holds ``measured["gap_<label>_points"]`` and ``["noise_<label>_points"]``
    (and `other`'s measured numbers), met only when both are met, missed when either is missed (`overall`)."""
    measured = {**entry["measured"], **other["measured"], f"gap_{label}_points": float(other["gap_points"]),
                f"noise_{label}_points": _noise(other)}
    result = overall([outcome(entry), outcome(other)])
    return {**entry, "measured": measured, "outcome": result, "shows": result == MET}


def outcome(entry: Mapping[str, Any]) -> str:
    """"met", "missed" or "within the noise": an entry's claim computed again from its numbers (so an entry written
    by older code, whose ``shows`` may follow another rule, is judged by today's).

    The headline's checks combine (`overall`; a speed not measured counts as within the noise); any other entry
    is its gap against its threshold with its noise (`against_limit`), together with every second side stored as
    ``measured["gap_<x>_points"]`` / ``["noise_<x>_points"]`` (`together`) and, for the criteria, "never behind
    random beyond the noise" and "Taylor's ρ the highest" (met or missed: they are decided with the noise already).
    """
    m = entry.get("measured", {})
    if "checks" in m:
        return overall([c if c in (MET, MISSED, WITHIN) else WITHIN for c in m["checks"].values()])
    threshold = float(entry.get("threshold_points") or 0.0)
    parts = [against_limit(float(entry["gap_points"]), _noise(entry), threshold, at_least=True)]
    parts += [against_limit(gap, noise, threshold, at_least=True) for _, gap, noise in _second_sides(m)]
    if "never_behind" in m:
        parts += [MET if m["never_behind"] else MISSED, MET if m.get("best_rho") == "taylor" else MISSED]
    return overall(parts)


def _second_sides(measured: Mapping[str, Any]) -> list[tuple[str, float, float]]:
    """``(label, gap, noise)`` of every second side `together` stored (``gap_<label>_points``, ``noise_<label>_points``;
    a null noise is infinite)."""
    sides = []
    for key in sorted(measured):
        label = key[len("gap_"):-len("_points")]
        if (key.startswith("gap_") and key.endswith("_points") and f"noise_{label}_points" in measured
                and measured[key] is not None):
            noise = measured[f"noise_{label}_points"]
            sides.append((label, float(measured[key]), math.inf if noise is None else float(noise)))
    return sides


def _places(gap: float, noise: float) -> int:
    return 2 if f"{abs(gap):.1f}" == f"{noise:.1f}" else 1          # never "ahead by 1.0 (± 1.0)"


def verdict(entry: Mapping[str, Any], ahead: str = "ahead", behind: str = "behind", *, noise: str | None = None) -> str:
    """The words for an entry's gap against zero, with the noise they used: "ahead by 3.1 points ± 1.2 (the test
    set's noise)", "behind by ...", or "tied: +0.2 points ± 0.9 (from -0.7 to +1.1), within the test set's noise".

    Ahead (behind) means the whole interval gap ± noise is above (below) zero; tied means it holds zero.  `noise`
    names the noise (default: the entry's ``noise_kind``, else `TEST_NOISE`): the test set's noise says nothing
    about another seed or machine.
    """
    gap, n = float(entry["gap_points"]), _noise(entry)
    words = noise or entry.get("noise_kind") or TEST_NOISE
    if not math.isfinite(n):
        return f"not judged: {gap:+.1f} points, and {words} is unknown"
    d = _places(gap, n)
    if abs(gap) <= n:
        return f"tied: {gap:+.{d}f} points ± {n:.{d}f} (from {gap - n:+.{d}f} to {gap + n:+.{d}f}), within {words}"
    side = ahead if gap > 0 else behind
    return f"{side} by {abs(gap):.{d}f} points ± {n:.{d}f} ({words})" + (", just beyond it" if d == 2 else "")


def judged(entry: Mapping[str, Any], *, noise: str | None = None) -> str:
    """The claim's outcome in words, with the interval and the noise it used: "met beyond the test set's noise:
    +34.4 points ± 1.7 (from +32.7 to +36.1), all at or above the 5-point threshold", "missed beyond ...: ... all
    below the 2-point threshold", "within the test set's noise: ... the interval holds the 2-point threshold".
    The headline lists its checks instead; a second side and the criteria's other conditions follow (`outcome`)."""
    result, m = outcome(entry), entry.get("measured", {})
    words = noise or entry.get("noise_kind") or TEST_NOISE
    if "checks" in m:
        return f"{result} ({'; '.join(f'{k}: {v}' for k, v in m['checks'].items())})"

    def interval(gap: float, n: float, threshold: float) -> str:
        d = _places(gap, n)
        where = {MET: f"all at or above the {threshold:g}-point threshold",
                 MISSED: f"all below the {threshold:g}-point threshold",
                 WITHIN: f"the interval holds the {threshold:g}-point threshold"}[against_limit(gap, n, threshold,
                                                                                               at_least=True)]
        return f"{gap:+.{d}f} points ± {n:.{d}f} (from {gap - n:+.{d}f} to {gap + n:+.{d}f}), {where}"

    threshold = float(entry.get("threshold_points") or 0.0)
    head = f"within {words}" if result == WITHIN else f"{result} beyond {words}"
    text = f"{head}: {interval(float(entry['gap_points']), _noise(entry), threshold)}"
    for label, gap, n in _second_sides(m):
        text += f"; against {label}: {interval(gap, n, threshold)}"
    if "never_behind" in m:
        text += (f"; never behind random beyond the noise: {'yes' if m['never_behind'] else 'no'}; the highest ρ of "
                 f"the cheap criteria: {m.get('best_rho')}")
    return text


def equal_cost(mflops: Mapping[str, float], tolerance: float = 0.05) -> bool:
    """Do the networks cost the same, within `tolerance` (0.05: the costliest at most 5% above the cheapest)?"""
    values = [float(v) for v in mflops.values()]
    return max(values) <= (1 + tolerance) * min(values)


def at_equal_flops(histories: Mapping[str, pd.DataFrame], mflops: Sequence[float] | None = None, *, n_images: int,
                   levels: int = 4) -> pd.DataFrame:
    """Two Prune–Train–Repeat runs at the same cost: each one's validation accuracy after the fine-tune at each of
    `mflops` (MFLOPs per image), interpolated between its iterations (`recover.history.compare_at_flops`).

    With ``mflops=None``, `levels` costs spread evenly on a log scale over the range both runs passed through
    (two significant digits), so any network size gets a table.  Returns one row per level both runs passed
    through (none: an empty table), with each run's accuracy (points), their gap and its noise: two standard errors
    of the difference of two *independent* accuracies on `n_images` images each (two runs' validation accuracies
    at interpolated points cannot be paired image by image), and a verdict: "<run> ahead" when the gap is beyond
    that noise, else "inconclusive" (a gap inside a noise of several points is no evidence of a tie either).
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
    columns = [f"{a} %", f"{b} %", f"{a} − {b} (points)", "noise (±points)", "verdict"]
    if not chosen:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="at"))
    wide = compare_at_flops(histories, chosen).pivot(index="gflops", columns="criterion", values="accuracy")
    wide = wide.sort_index(ascending=False)
    pa, pb = wide[a], wide[b]
    table = pd.DataFrame(dict(zip(columns, (100 * pa, 100 * pb, 100 * (pa - pb),
                                            200 * ((pa * (1 - pa) + pb * (1 - pb)) / n_images) ** 0.5))))
    gap, noise = table[columns[2]], table[columns[3]]
    table[columns[4]] = [f"{a} ahead" if g > n else f"{b} ahead" if g < -n else "inconclusive"
                         for g, n in zip(gap, noise)]
    table.index = pd.Index([f"{1e3 * g:g} MFLOPs" for g in wide.index], name="at")
    return table
