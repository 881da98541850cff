"""The latency model: a network's time predicted from its widths, as the sum of its blocks, calibrated end to end.

Savings measured one group at a time do not add up: a conv costs about c_in × c_out, so narrowing the two groups
on either side of it saves less than the sum of their separate savings (halving both saves about 75% of the conv,
not 100%), and a residual stream's group is read by every conv of its stage.  So the model does not store
savings; it stores **times of blocks** (`blocks`: a conv with its folded BatchNorm, activation and pooling; an
addition with its activation; ...), each measured alone at its own sizes (`entries`), and predicts any width
pattern by looking up every block at the sizes that pattern gives it:

    T(widths) = scale · Σ_blocks  t_block(its input and output channels under widths)  +  residual

The **calibration** corrects for what the blocks timed alone do not see (Python between the layers, caches cold
from the layer before, the machine's state when the entries were measured): one end-to-end measurement of the
network gives a constant residual, the measured time minus the sum of its blocks; several measurements of networks
of different widths give a line, ``T = scale · Σ + residual`` (`calibrate`): Prune–Train–Repeat adds a point each
time it times a network end to end.

Entries are measured lazily: `ensure` measures, in one harness, the blocks that a list of width patterns needs
and the store lacks; `predict` then only looks them up.  Entries live on disk (`entries.EntryStore`), shared by
every network and iteration on this machine.
"""

from __future__ import annotations

import statistics
from typing import Iterable, Mapping, Sequence

import pandas as pd
import torch.nn as nn

from .blocks import Block, blocks_of, build, signature
from .entries import EntryStore
from .network import Network, Widths

__all__ = ["LatencyModel"]


class LatencyModel:
    """Predicts `model`'s time per batch of `input_shape` ``(N, C, H, W)`` for any widths at or below its own.

    Args:
        model: the network (its architecture and current widths; left unchanged).
        input_shape: the batch it runs on.
        form: ``"deploy"`` (PyTorch, BatchNorm folded, channels-last) or a PyTorch form of `measure.FORMS`, or a
            registered runtime (``"onnxruntime"``, ``"openvino"``).
        num_threads: threads, as the network will run.
        cache: keep measured entries on disk (`entries.cache_dir`).
        store: an `EntryStore` to share (default: the one of this form and thread count).

    Attributes:
        network: the analysed network (`network.Network`): shapes, parameters and FLOPs under any widths.
        blocks: its blocks.
        scale, residual_ms: the calibration (1 and 0 until `calibrate`).
    """

    def __init__(self, model: nn.Module, input_shape: Sequence[int], *, form: str = "deploy", num_threads: int = 1,
                 cache: bool = True, store: EntryStore | None = None, progress: bool = False) -> None:
        self.network = Network(model, input_shape)
        self.blocks: list[Block] = blocks_of(self.network)
        self.store = store if store is not None else EntryStore(form, num_threads, cache=cache)
        self.residual_ms = 0.0
        self.progress = progress
        self._signatures: dict[tuple, str] = {}

    @property
    def widths(self) -> dict[str, int]:
        """The network's own widths (every prunable group)."""
        return dict(self.network.widths)

    def _key(self, block: Block, widths: Widths) -> tuple:
        own = self.network.widths
        return (block.name, *(widths.get(g, own[g]) for g in sorted(block.groups)))

    def signature(self, block: Block, widths: Widths) -> str:
        key = self._key(block, widths)
        if key not in self._signatures:
            self._signatures[key] = signature(self.network, block, widths)
        return self._signatures[key]

    def ensure(self, patterns: Iterable[Widths]) -> None:
        """Measure every block entry that the width `patterns` need and the store lacks (one harness for all)."""
        pending = {}
        for widths in patterns:
            for block in self.blocks:
                s = self.signature(block, widths)
                if s not in self.store and s not in pending:
                    pending[s] = (lambda b=block, w=dict(widths): build(self.network, b, w))
        self.store.measure(pending, progress=self.progress)

    def block_ms(self, widths: Widths | None = None) -> dict[str, float]:
        """Each block's time under `widths` (ms per batch), measuring what is missing."""
        widths = widths or {}
        self.ensure([widths])
        return {b.name: self.store.get(self.signature(b, widths)).ms for b in self.blocks}

    def sum_ms(self, widths: Widths | None = None) -> float:
        """The sum of the blocks' times under `widths`, without the residual."""
        return sum(self.block_ms(widths).values())

    def predict(self, widths: Widths | None = None) -> float:
        """The network's time per batch under `widths` (ms): the sum of its blocks, calibrated (`calibrate`)."""
        return self.scale * self.sum_ms(widths) + self.residual_ms

    def describe(self, widths: Widths | None = None) -> pd.DataFrame:
        """One row per block under `widths`: its operations, its input shape, its time (ms) and share of the sum."""
        widths = widths or {}
        times = self.block_ms(widths)
        nodes = {n.name: n for n in self.network.nodes}

        def op(name: str) -> str:
            node = nodes[name]
            if node.op == "call_module":
                return type(self.network.modules[node.target]).__name__
            return getattr(node.target, "__name__", str(node.target))

        total = sum(times.values())
        rows = [{"block": b.name, "operations": " → ".join(op(n) for n in b.nodes),
                 "input": "×".join(map(str, self.network.shape(b.inputs[0], widths) or ())),
                 "ms": times[b.name], "share %": 100 * times[b.name] / total} for b in self.blocks]
        return pd.DataFrame(rows).set_index("block")

    def noise_ms(self, widths: Widths | None = None) -> float:
        """The noise of the sum under `widths`: the entries' noises added in quadrature."""
        widths = widths or {}
        self.ensure([widths])
        return sum(self.store.get(self.signature(b, widths)).noise_ms ** 2 for b in self.blocks) ** 0.5

    def calibrate(self, measured_ms: float | Sequence[tuple[Widths, float]], widths: Widths | None = None) -> float:
        """Calibrate the sum against end-to-end measurements; returns the residual at the network's own widths (ms).

        One measurement (`measured_ms` of the network at `widths`, default: as it is) sets the residual:
        ``T = scale · Σ + residual`` with the scale kept (1 at first).  Several, ``[(widths, ms), ...]`` of networks
        whose sums differ by at least `spread_for_a_line` of the largest, fit the line by least squares: what the
        blocks timed alone do not see may grow or shrink with the network (caches, the Python between the layers),
        and two points far enough apart tell which (close ones would make the slope noise).
        """
        points = [(widths or {}, float(measured_ms))] if not isinstance(measured_ms, Sequence) else list(measured_ms)
        sums = [self.sum_ms(w) for w, _ in points]
        times = [t for _, t in points]
        if len(points) > 1 and max(sums) - min(sums) >= self.spread_for_a_line * max(sums):
            fit = statistics.linear_regression(sums, times)
            self.scale, self.residual_ms = fit.slope, fit.intercept
        else:                                   # too close together for a slope: keep it, fit the residual
            self.residual_ms = statistics.fmean(times) - self.scale * statistics.fmean(sums)
        return self.predict() - self.sum_ms()

    #: a line is fitted only through measurements whose sums differ by this share of the largest (else a constant)
    spread_for_a_line = 0.2

    scale = 1.0

    def saving_ms(self, widths: Widths, at: Widths | None = None) -> float:
        """How much less time `widths` take than `at` (default: the network as it is), by the model."""
        return self.predict(at) - self.predict(widths)

    def savings(self, options: Mapping[str, Sequence[int]], at: Widths) -> dict[str, list[float]]:
        """The time each option saves, ``{group: [ms per width of options[group]]}``, with every other group at its
        width in `at`: each group's cost is read at its neighbours' current widths (all measured in one harness)."""
        patterns = [{**at, g: w} for g, ws in options.items() for w in ws]
        self.ensure([at, *patterns])
        here = self.block_ms(at)
        out = {}
        for g, ws in options.items():
            touched = [b for b in self.blocks if g in b.groups]
            out[g] = [self.scale * sum(here[b.name] - self.store.get(self.signature(b, {**at, g: w})).ms for b in touched)
                      for w in ws]
        return out
