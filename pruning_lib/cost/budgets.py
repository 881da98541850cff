"""Budgets: each Prune–Train–Repeat iteration's cut for several targets at once, time, parameters and FLOPs.

The post's claim is two targets, "3× faster **and** 4× smaller": `Targets` takes any of a speedup (measured end to
end on this machine, in the form or runtime the network ships in), a reduction of the parameters and one of the
FLOPs.  Each iteration (`BudgetPlanner.plan`):

1. **asks** a share of what is left to save of every target not yet met, the shares chosen so that all targets
   are reached in the same number of iterations (`asks`): with ``share=0.1`` the hardest target moves by a tenth of
   its current value per iteration, and the last iteration asks exactly for what is left;
2. lists each group's **options**, widths in steps of `step` (no deeper than `depth` in one cut), with what each
   saves of every resource *with every other group at its current width*: the time by the latency model
   (`latency.LatencyModel`: read at the neighbours' current widths, so the c_in × c_out coupling is in it),
   parameters and FLOPs exactly (`network.Network`);
3. chooses one width per group that meets every ask at the least importance removed (`plan.widths_for_budgets`);
4. **corrects** the asks until the choice's *real* savings meet them: the options' savings are those of one
   group at a time and do not add up over neighbouring groups, so the choice is re-costed as a whole (the latency
   model for time, exact counts for the rest) and each ask scaled by what it was short of, a few times
   (`_meet_by_model`);
5. **checks time end to end**: the candidate network is built (the cut applied to a copy) and timed against the
   network as it is in one harness; where the measured saving misses the ask beyond its noise, the time ask is
   corrected by the ratio (a secant step) and the candidate built again, up to `checks` times (`_meet_by_clock`).
"""

from __future__ import annotations

import copy
import math
import statistics
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
import torch.nn as nn

from .. import runtime
from ..measure.harness import interleaved, spread
from ..measure.latency import forward_runner
from ..plan import plan_keeping, widths_for_budgets
from ..surgery import prune_filters
from .latency import LatencyModel
from .network import Network, Widths

__all__ = ["BudgetPlanner", "Targets", "cuts_table", "iterations_left"]

RESOURCES = ("latency", "params", "flops")


@dataclass(frozen=True)
class Targets:
    """How many times faster, fewer parameters, fewer FLOPs (None: no target of that kind); at least one."""

    speedup: float | None = None
    params_reduction: float | None = None
    flops_reduction: float | None = None

    def __post_init__(self) -> None:
        given = {"speedup": self.speedup, "params_reduction": self.params_reduction,
                 "flops_reduction": self.flops_reduction}
        if all(v is None for v in given.values()):
            raise ValueError("give at least one target: speedup, params_reduction or flops_reduction")
        for name, v in given.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 1):
                raise ValueError(f"{name} is how many times faster (or fewer), a number > 1; got {v!r}")

    @property
    def factors(self) -> dict[str, float]:
        """``{resource: factor}`` of the targets given, time first."""
        out = {"latency": self.speedup, "params": self.params_reduction, "flops": self.flops_reduction}
        return {r: float(f) for r, f in out.items() if f is not None}


def iterations_left(ratios: Mapping[str, float], share: float) -> int:
    """How many iterations reach every goal when the hardest one moves by `share` of its value per iteration.

    `ratios` are goal / current for each resource not yet met (each < 1)."""
    hardest = min(ratios.values())
    return max(1, math.ceil(math.log(hardest) / math.log(1 - share) - 1e-9))


class BudgetPlanner:
    """Plans every cut of a run with `targets`, starting from `model` (the dense network; left unchanged).

    Args:
        model: the starting network; widths are always those of its groups (``{group: channels}``).
        input_shape: the batch it runs on, ``(N, C, H, W)``: latency is per batch, FLOPs per image.
        targets: what to reach (`Targets`).
        form, num_threads: where the time is measured (`latency.LatencyModel`).
        share: the share of each target's remaining way covered per iteration (see `asks`).
        step: widths in multiples of this many channels (besides a group's current width).
        depth: one cut keeps at least ``1 - depth`` of a group's channels (or ``1 - 4 x`` the iteration's share).
        checks: end-to-end timings allowed per cut.
        cache: keep the latency model's entries on disk.
        exclude: groups kept whole (never given fewer channels).
    """

    def __init__(self, model: nn.Module, input_shape: Sequence[int], targets: Targets, *, form: str = "deploy",
                 num_threads: int = 1, share: float = 0.1, step: int = 8, depth: float | None = None,
                 checks: int = 3, cache: bool = True, progress: bool = False, exclude: Sequence[str] = ()) -> None:
        if not 0 < share < 1:
            raise ValueError(f"share must be in (0, 1); got {share}")
        self.targets, self.share, self.step, self.depth, self.checks = targets, share, step, depth, checks
        self.exclude = frozenset(exclude)
        self.form, self.num_threads, self.input_shape = form, num_threads, tuple(input_shape)
        self.latency = (LatencyModel(model, input_shape, form=form, num_threads=num_threads, cache=cache,
                                     progress=progress) if targets.speedup else None)
        self.network = self.latency.network if self.latency else Network(model, input_shape)
        self.start = {"params": float(self.network.params()), "flops": self.network.flops()}
        self.log: list[dict] = []             # one row per cut: asks, the model's and the clock's savings
        self.points: list[tuple[dict, float]] = []   # end-to-end measurements: (widths, ms), the calibration

    def report(self) -> dict:
        """Each cut's asks, the model's savings and the end-to-end checks (`log`), and the latency entries this
        planner measured (``entries_measured``, ``entry_seconds``) or found on disk (``entries_stored``)."""
        store = self.latency.store if self.latency else None
        return {"log": list(self.log), "entries_measured": store.measured if store else 0,
                "entry_seconds": round(store.seconds, 2) if store else 0.0, "entries_stored": len(store) if store else 0}

    # ---------------------------------------------------------------- where we stand
    def ratios(self, widths: Widths, speedup: float | None = None) -> dict[str, float]:
        """goal / current for every target not met yet (`speedup`: the current measured speedup)."""
        out = {}
        for r, factor in self.targets.factors.items():
            if r == "latency":
                ratio = (speedup or 1.0) / factor
            else:
                now = float(self.network.params(widths)) if r == "params" else self.network.flops(widths)
                ratio = self.start[r] / factor / now
            if ratio < 1 - 1e-9:
                out[r] = ratio
        return out

    def met(self, widths: Widths, speedup_low: float | None = None) -> bool:
        """Every target reached: the parameters and FLOPs counted, the speedup less its noise measured."""
        return not self.ratios(widths, speedup_low)

    def asks(self, widths: Widths, speedup: float | None, latency_ms: float | None) -> dict[str, float]:
        """What this iteration saves of each resource: every unmet target's current value times
        ``1 - ratio ** (1 / n)``, n the iterations left (`iterations_left`), so all arrive together; time aims a
        little beyond its goal (``latency_margin``), so that the speedup less its noise reaches it."""
        ratios = self.ratios(widths, speedup)
        if not ratios:
            return {}
        if "latency" in ratios:
            ratios["latency"] *= 1 - self.latency_margin
        n = iterations_left(ratios, self.share)
        now = {"latency": latency_ms, "params": float(self.network.params(widths)), "flops": self.network.flops(widths)}
        return {r: now[r] * (1 - ratio ** (1 / n)) for r, ratio in ratios.items()}

    latency_margin = 0.02

    # ---------------------------------------------------------------- options
    def grid(self, width: int, floor: int, deepest: float) -> list[int]:
        """The widths one cut may give a group of `width` channels: multiples of `step` at or above
        ``max(floor, (1 - deepest) * width)``, and `width` itself."""
        low = max(floor, math.ceil((1 - deepest) * width - 1e-9), 1)
        return [w for w in range(self.step, width, self.step) if w >= low] + [width]

    def options(self, widths: Widths, floors: Mapping[str, int], asks: Mapping[str, float]
                ) -> dict[str, list[tuple[int, dict[str, float]]]]:
        """Each group's widths and what each saves of every resource asked for, the others at `widths`."""
        share = max(a / now for a, now in zip(asks.values(), self._now(widths, asks).values()))
        deepest = self.depth if self.depth is not None else min(0.9, max(0.25, 4 * share))
        grids = {g: self.grid(w, floors.get(g, 1), deepest) for g, w in widths.items()
                 if g in self.network.widths and g not in self.exclude}
        grids = {g: ws for g, ws in grids.items() if len(ws) > 1}
        time = self.latency.savings(grids, widths) if "latency" in asks else {}
        out = {}
        for g, ws in grids.items():
            rows = []
            for j, w in enumerate(ws):
                saved = {}
                if "latency" in asks:
                    saved["latency"] = time[g][j]
                for r in ("params", "flops"):
                    if r in asks:
                        saved[r] = self._value(r, widths) - self._value(r, {**widths, g: w})
                rows.append((w, saved))
            out[g] = rows
        return out

    def _value(self, resource: str, widths: Widths) -> float:
        if resource == "params":
            return float(self.network.params(widths))
        if resource == "flops":
            return self.network.flops(widths)
        return self.latency.predict(widths)

    def _now(self, widths: Widths, asks: Mapping[str, float]) -> dict[str, float]:
        return {r: self._value(r, widths) for r in asks}

    # ---------------------------------------------------------------- one cut
    def _meet_by_model(self, scores, options, asks: Mapping[str, float], widths: Widths,
                       rounds: int = 6) -> tuple[dict[str, int], dict[str, float], dict[str, float]]:
        """Widths whose real savings (the whole choice re-costed) meet `asks`: each ask scaled by the share it
        was short of (or beyond), a few times.  Returns the widths, the internal asks and the savings."""
        inner = dict(asks)
        now = self._now(widths, asks)
        best = None
        for _ in range(rounds):
            chosen = widths_for_budgets(scores, options, inner)
            new = {**widths, **chosen}
            real = {r: now[r] - self._value(r, new) for r in asks}
            short = {r: asks[r] / real[r] if real[r] > 0 else 2.0 for r in asks}
            ok = all(real[r] >= asks[r] * (1 - 1e-6) for r in asks)
            if ok and (best is None or sum(real[r] / asks[r] for r in asks) < best[3]):
                best = (chosen, dict(inner), real, sum(real[r] / asks[r] for r in asks))
            if ok and all(s >= 1 / 1.05 for s in short.values()):
                break
            inner = {r: inner[r] * min(2.0, max(0.5, short[r])) for r in inner}
        if best is None:
            best = (chosen, dict(inner), real, 0.0)
        return best[0], best[1], best[2]

    def _measured(self, widths: Widths, ms: float) -> None:
        """One more end-to-end measurement: the latency model is calibrated on the last `calibration_points` ones
        (a line through them once there are two widths: `latency.LatencyModel.calibrate`)."""
        self.points.append((dict(widths), float(ms)))
        self.latency.calibrate(self.points[-self.calibration_points:])

    calibration_points = 8

    def _probe(self, model: nn.Module, widths: Widths) -> None:
        """Before the first cut: the network and a copy with every group at half its width, timed end to end in one
        harness, so that the calibration has a slope from the start (two points far apart)."""
        half = {g: max(1, w // 2) for g, w in widths.items() if g in self.network.widths}
        timed = self._time_cut(model, {g: torch.zeros(w) for g, w in widths.items()}, {**widths, **half})
        self.points += [(dict(widths), timed["now_ms"]), ({**widths, **half}, timed["cut_ms"])]
        self.latency.calibrate(self.points)

    def _time_cut(self, model: nn.Module, scores, widths: Widths) -> dict[str, float]:
        """The candidate (`model` cut to `widths`) timed against `model`: the saving (median of the rounds'
        differences, ms) and its noise, and both times."""
        candidate = prune_filters(copy.deepcopy(model), plan_keeping(scores, widths))
        x = torch.randn(self.input_shape)
        with runtime.mode(model, training=False), runtime.mode(candidate, training=False), \
                runtime.num_threads(self.num_threads), torch.no_grad():
            runners = {"now": forward_runner(model, x, self.form, self.num_threads),
                       "cut": forward_runner(candidate, x, self.form, self.num_threads)}
            rounds = interleaved(runners, rounds=7, calls=3)
        diffs = [r["now"] - r["cut"] for r in rounds]
        return {"saved_ms": statistics.median(diffs), "noise_ms": spread(diffs),
                "now_ms": statistics.median(r["now"] for r in rounds), "cut_ms": statistics.median(r["cut"] for r in rounds)}

    def plan(self, model: nn.Module, scores: Mapping[str, Any], widths: Widths, floors: Mapping[str, int], *,
             speedup: float | None = None, latency_ms: float | None = None) -> dict[str, int]:
        """This iteration's widths for `model` (the network now, at `widths`): see the module docstring.

        Args:
            scores: ``{group: (size,) scores}``, normalised per group.
            floors: the fewest channels each group may keep.
            speedup, latency_ms: the network's speedup over the start (less its noise, as the target is judged) and
                its time per batch, as last measured end to end (needed with a speedup target; the latency model is
                calibrated with them).
        """
        widths = {g: int(w) for g, w in widths.items()}
        if self.latency is not None:
            if latency_ms is None or speedup is None:
                raise ValueError("a speedup target needs the network's measured speedup and latency_ms")
            if not self.points:
                self._probe(model, widths)
            self._measured(widths, latency_ms)
        asks = self.asks(widths, speedup, latency_ms)
        if not asks:
            return widths
        options = self.options(widths, floors, asks)
        if not options:
            return widths
        now = self._now(widths, asks)
        chosen, inner, _ = self._meet_by_model(scores, options, asks, widths)
        row = {"asks": dict(asks), "checks": [], "picked": None}
        if "latency" in asks and self.checks:
            chosen = self._meet_by_clock(model, scores, options, asks, inner, chosen, widths, row)
        new = {**widths, **chosen}
        row["model"] = {r: now[r] - self._value(r, new) for r in asks}     # the savings of the widths taken
        row["widths"] = dict(new)
        self.log.append(row)
        return new

    def _meet_by_clock(self, model, scores, options, asks, inner, chosen, widths, row) -> dict[str, int]:
        """Time the candidate end to end; while its measured saving misses the time ask beyond the noise (or 5% of
        the ask), scale the time ask by ask / measured (a secant step) and choose again, at most `checks` timings.
        The candidate taken meets the ask without overshooting it by more than a quarter (beyond the noise), else
        the one that saved most below the ask (the next iteration completes it), else the one that saved least."""
        goal = asks["latency"]
        tried = []
        for _ in range(self.checks):
            timed = self._time_cut(model, scores, {**widths, **chosen})
            tried.append((chosen, timed))
            self._measured(widths, timed["now_ms"])
            self._measured({**widths, **chosen}, timed["cut_ms"])
            row["checks"].append({"asked_ms": inner["latency"], "saved_ms": timed["saved_ms"],
                                  "noise_ms": timed["noise_ms"]})
            if abs(timed["saved_ms"] - goal) <= max(timed["noise_ms"], 0.05 * goal):
                break
            factor = goal / timed["saved_ms"] if timed["saved_ms"] > 0 else 2.0
            inner = {**inner, "latency": inner["latency"] * min(2.0, max(0.5, factor))}
            again = widths_for_budgets(scores, options, inner)
            others = {r: a for r, a in asks.items() if r != "latency"}
            if others:                      # keep the other asks met by the whole choice
                now, new = self._now(widths, others), {**widths, **again}
                if any(now[r] - self._value(r, new) < a * (1 - 1e-6) for r, a in others.items()):
                    break
            if again == chosen:
                break
            chosen = again
        row["picked"] = pick = self._acceptable(goal, [t for _, t in tried])
        return tried[pick][0]

    @staticmethod
    def _acceptable(goal: float, timings: Sequence[Mapping[str, float]]) -> int:
        """Which timed candidate to take (see `_meet_by_clock`)."""
        def slack(t):
            return max(t["noise_ms"], 0.05 * goal)
        good = [k for k, t in enumerate(timings) if goal - slack(t) <= t["saved_ms"] <= 1.25 * goal + slack(t)]
        if good:
            return min(good, key=lambda k: abs(timings[k]["saved_ms"] - goal))
        under = [k for k, t in enumerate(timings) if t["saved_ms"] < goal]
        if under:
            return max(under, key=lambda k: timings[k]["saved_ms"])
        return min(range(len(timings)), key=lambda k: timings[k]["saved_ms"])


def cuts_table(report: Mapping[str, Any]) -> pd.DataFrame:
    """`BudgetPlanner.report`'s log as a table, one row per cut: what it asked of each resource, what the model
    said the chosen widths save, and every end-to-end check of the time (measured saving ± noise, ms; ▶: the
    candidate taken)."""
    rows = []
    for i, cut in enumerate(report.get("log", []), start=1):
        row = {"cut": i}
        for r, a in cut["asks"].items():
            unit = " ms" if r == "latency" else ""
            row[f"{r}: asked{unit}"] = a
            row[f"{r}: chosen saves{unit}"] = cut["model"].get(r)
        if cut["checks"]:
            row["clock: saved ms (each check)"] = ", ".join(
                ("▶ " if k == cut.get("picked") else "") + f"{c['saved_ms']:.2f} ± {c['noise_ms']:.2f}"
                for k, c in enumerate(cut["checks"]))
        rows.append(row)
    return pd.DataFrame(rows).set_index("cut") if rows else pd.DataFrame()
