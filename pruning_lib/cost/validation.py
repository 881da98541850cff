"""Does the latency model add up?  Its predictions against end-to-end measurements, and one layer's time surface.

- `random_widths`: width patterns to test it on (each group at a random share of its width);
- `predicted_vs_measured`: every pattern's network built (random weights: a dense layer's time does not depend on
  them) and timed end to end in one interleaved harness with the network as it is; the model is calibrated on
  the network as it is and on narrower networks from that same harness (every group at half its width, and two
  random patterns held out), and predicts every pattern;
- `layer_surface`: one conv block's time over a grid of input and output channels, the staircase in two
  dimensions (the entries the model is made of).
"""

from __future__ import annotations

import random
from typing import Mapping, Sequence

import pandas as pd
import torch
import torch.nn as nn

from .. import runtime
from ..measure.harness import interleaved, paired_speedup, summarise
from ..measure.latency import forward_runner
from ..surgery import with_widths
from .latency import LatencyModel

__all__ = ["layer_surface", "predicted_vs_measured", "random_widths"]


def random_widths(widths: Mapping[str, int], count: int, *, low: float = 0.3, high: float = 1.0,
                  seed: int = 0) -> list[dict[str, int]]:
    """`count` patterns, each group at a uniformly random share in [low, high] of its width (at least 1)."""
    rng = random.Random(seed)
    return [{g: max(1, round(w * rng.uniform(low, high))) for g, w in widths.items()} for _ in range(count)]


def predicted_vs_measured(model: nn.Module, input_shape: Sequence[int], patterns: Sequence[Mapping[str, int]], *,
                          form: str = "deploy", num_threads: int = 1, rounds: int = 9, calls: int = 3, seed: int = 0,
                          latency: LatencyModel | None = None, calibration: float | None = 0.5,
                          held_out: int = 2) -> pd.DataFrame:
    """The model's prediction of each width pattern against its measurement, end to end.

    The network as it is, the calibration networks (every group at the share `calibration` of its width, None:
    none; and `held_out` random patterns from `random_widths`, with another seed) and every pattern's
    network are timed in one interleaved harness (`rounds` rounds of `calls` calls each, a random order per round);
    the model (`latency`, or a new `LatencyModel`) is calibrated on the network as it is and the calibration
    networks (`LatencyModel.calibrate`), never on a pattern it then predicts.

    Returns:
        One row per pattern: ``predicted_ms``, ``measured_ms``, ``noise_ms`` (the measurement's spread),
        ``error`` (predicted / measured - 1), ``predicted_speedup`` and ``measured_speedup`` (paired, round by
        round) against the network as it is; ``attrs``: ``reference_ms`` (the network as it is, measured),
        ``sum_ms`` (its blocks' sum), ``scale`` and ``residual_ms`` (the calibration).
    """
    latency = latency or LatencyModel(model, input_shape, form=form, num_threads=num_threads)
    spread = [{g: max(1, round(calibration * w)) for g, w in latency.widths.items()}] if calibration is not None else []
    spread += random_widths(latency.widths, held_out, seed=seed + 1000) if held_out else []
    latency.ensure([{}, *patterns, *spread])
    nets = {"reference": model, **{f"p{i}": with_widths(model, p) for i, p in enumerate(patterns)},
            **{f"c{i}": with_widths(model, p) for i, p in enumerate(spread)}}
    x = torch.randn(*input_shape)
    with runtime.num_threads(num_threads), torch.no_grad():
        runners = {k: forward_runner(m.eval(), x, form, num_threads) for k, m in nets.items()}
        timed = interleaved(runners, rounds=rounds, calls=calls, seed=seed)
    times = summarise(timed)
    reference = times["reference"]["ms"]
    latency.calibrate([({}, reference), *((p, times[f"c{i}"]["ms"]) for i, p in enumerate(spread))])
    rows = []
    for i, pattern in enumerate(patterns):
        predicted, measured = latency.predict(pattern), times[f"p{i}"]["ms"]
        rows.append({"pattern": i, "predicted_ms": predicted, "measured_ms": measured,
                     "noise_ms": times[f"p{i}"]["noise_ms"], "error": predicted / measured - 1,
                     "predicted_speedup": latency.predict() / predicted,
                     "measured_speedup": paired_speedup(timed, "reference", f"p{i}")["speedup"]})
    table = pd.DataFrame(rows).set_index("pattern")
    table.attrs.update(reference_ms=reference, sum_ms=latency.sum_ms(), scale=latency.scale,
                       residual_ms=latency.residual_ms)
    return table


def layer_surface(model: nn.Module, input_shape: Sequence[int], conv: str, in_channels: Sequence[int],
                  out_channels: Sequence[int], *, form: str = "deploy", num_threads: int = 1,
                  cache: bool = True) -> pd.DataFrame:
    """The time of `conv`'s block (the conv with its BatchNorm, activation and pooling, as the latency model's
    entries are) at every pair of `in_channels` x `out_channels`, in `model` run on batches of `input_shape`:
    ms, one row per input width, one column per output width.  `conv` reads one group and makes another (e.g.
    `models.probe_chain`'s ``"2"``)."""
    latency = LatencyModel(model, input_shape, form=form, num_threads=num_threads, cache=cache)
    targets = {n.name: n.target for n in latency.network.nodes}
    block = next((b for b in latency.blocks if targets[b.nodes[0]] == conv), None)
    groups = latency.network.trace.groups
    made = next((g.name for g in groups.values() if conv in g.producers and not g.refused), None)
    read = [g.name for g in groups.values() if conv in g.readers and not g.refused]
    if block is None or made is None or len(read) != 1:
        raise ValueError(f"{conv!r} must be a conv that reads one prunable group and makes another")
    patterns = {(i, o): {read[0]: i, made: o} for i in in_channels for o in out_channels}
    latency.ensure(patterns.values())
    grid = {(i, o): latency.store.get(latency.signature(block, p)).ms for (i, o), p in patterns.items()}
    table = pd.DataFrame([[grid[i, o] for o in out_channels] for i in in_channels], index=list(in_channels),
                         columns=list(out_channels))
    table.index.name, table.columns.name = "input channels", "output channels"
    return table
