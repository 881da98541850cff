"""The timing harness: several things timed in turns, so that a slow moment of the machine hits all of them.

Every number of the library that compares times comes from here: the latency model's entries
(`latency.entries`), the end-to-end speedup a speed target is judged by (`paired_speedup`), the benchmarks.

Protocol (`interleaved`): one untimed call of each runner first (warm-up: allocations, lazy initialisation);
then `rounds` rounds, each running every runner `calls` times in a fresh random order, keeping the median of
its calls; a runner's time is the median of its round medians, its noise the spread of those round medians
(`spread`).  Two runners compared in the same rounds are *paired*: their ratio is taken round by round.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

from tqdm.auto import tqdm

__all__ = ["Timing", "interleaved", "paired_speedup", "spread", "summarise"]


def spread(values: Sequence[float]) -> float:
    """The noise of the median of `values`: half their interquartile range, at least their standard error
    (0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4)
    return max((q3 - q1) / 2, statistics.stdev(values) / len(values) ** 0.5)


def interleaved(runners: Mapping[str, Callable[[], object]], *, rounds: int = 7, calls: int | Mapping[str, int] = 3,
                seed: int = 0, progress: bool = False, desc: str = "timing") -> list[dict[str, float]]:
    """Time every runner in turns; one dict per round, ``{name: median ms of its calls in that round}``.

    Args:
        runners: name -> a function of nothing (one forward pass, say).
        rounds: rounds; each runs every runner in a fresh random order (seeded by `seed`).
        calls: calls of each runner per round (their median is kept), or ``{name: calls}``.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1; got {rounds}")
    order, rng, out = list(runners), random.Random(seed), []
    for run in runners.values():                                        # warm-up
        run()
    for _ in tqdm(range(rounds), desc=desc, disable=not progress, leave=False):
        rng.shuffle(order)
        times: dict[str, float] = {}
        for name in order:
            n = calls[name] if isinstance(calls, Mapping) else calls
            samples = []
            for _ in range(max(1, n)):
                start = time.perf_counter()
                runners[name]()
                samples.append(1e3 * (time.perf_counter() - start))
            times[name] = statistics.median(samples)
        out.append(times)
    return out


class Timing(dict):
    """``{"ms": median over rounds, "noise_ms": spread(rounds), "rounds": [...]}`` of one runner."""


def summarise(rounds: Sequence[Mapping[str, float]]) -> dict[str, Timing]:
    """Each runner's median over rounds and its noise, from `interleaved`'s rounds."""
    names = rounds[0].keys() if rounds else ()
    return {n: Timing(ms=statistics.median(r[n] for r in rounds), noise_ms=spread([r[n] for r in rounds]),
                      rounds=[r[n] for r in rounds]) for n in names}


def paired_speedup(rounds: Sequence[Mapping[str, float]], reference: str, other: str) -> dict[str, float]:
    """How much faster `other` ran than `reference` in the same rounds: the median of the round-by-round ratios
    (``speedup``), its noise (``noise``: `spread` of the ratios), ``low`` and ``high`` (speedup -/+ noise), and
    both medians (``reference_ms``, ``ms``)."""
    ratios = [r[reference] / r[other] for r in rounds]
    speedup, noise = statistics.median(ratios), spread(ratios)
    return {"speedup": speedup, "noise": noise, "low": speedup - noise, "high": speedup + noise,
            "reference_ms": statistics.median(r[reference] for r in rounds),
            "ms": statistics.median(r[other] for r in rounds)}
