"""Readable axes for the other plot modules: log-axis ticks as plain numbers, text labels that do not collide.

- `readable_log_axis`: ticks at 1, 2, 5, 10, ... written ``5`` or ``0.2``, not ``5×10⁰``; no labelled minor ticks.
- `place_labels`: a label beside each point, at the first of a few offsets (nearest first) where it overlaps
  no other label, no marker or error bar, and stays inside the axes; far labels get a thin leader line.
- `text_box`: the label's own box in pixels (an `Annotation`'s extent includes its leader line).

Both work in display space, so call them once the figure's layout and the axes' limits are final.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.text import Annotation, Text
from matplotlib.transforms import Bbox

__all__ = ["place_labels", "readable_log_axis", "text_box"]

#: label offsets tried, in points from the point: 8 directions (right first), at growing distances
DIRECTIONS = [(1, 0), (1, 1), (0, 1), (1, -1), (-1, 0), (-1, 1), (0, -1), (-1, -1)]
RADII = (5, 10, 16, 24, 34, 46, 60)


def readable_log_axis(axis: Axis) -> None:
    """Major ticks of a log `axis` at plain numbers (1, 2, 5 × 10^k; finer steps on a short range), written
    ``{:g}`` (``0.2``, ``5``, ``20``), and unlabelled minor ticks.  Call it after the limits are set.

    An axis spanning more than three decades, or reaching below 0.001, gets ticks at powers of ten only (and keeps
    matplotlib's ``10⁻⁵`` labels where ``{:g}`` would write ``1e-05``)."""
    lo, hi = sorted(axis.get_view_interval())
    if lo <= 0:
        raise ValueError(f"readable_log_axis needs positive limits, got {lo:g} .. {hi:g}")
    decades = math.log10(hi / lo)
    mantissas = (1,) if decades > 3 else (1, 2, 5) if decades >= 1 else (1, 2, 3, 5) if decades >= 0.4 \
        else tuple(range(1, 10))
    ticks = [m * 10.0 ** k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
             for m in mantissas if lo <= m * 10.0 ** k <= hi]
    if len(ticks) < 2:                                       # a very short range: evenly spaced round numbers
        ticks = [t for t in ticker.MaxNLocator(nbins=3).tick_values(lo, hi) if lo <= t <= hi and t > 0]
    axis.set_major_locator(ticker.FixedLocator(ticks))
    axis.set_minor_formatter(ticker.NullFormatter())
    if min(ticks) >= 1e-3 and max(ticks) < 1e7:
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    else:
        axis.set_major_formatter(ticker.LogFormatterSciNotation())


def text_box(label: Text) -> Bbox:
    """The box of a label's text in pixels (for an `Annotation`, without its leader line)."""
    if isinstance(label, Annotation):
        label.get_window_extent()             # brings the text's position up to date (offset points -> pixels)
    return Text.get_window_extent(label)


def _boxes(boxes: Sequence[Bbox]) -> np.ndarray:
    return np.array([[b.x0, b.y0, b.x1, b.y1] for b in boxes], float).reshape(-1, 4)


def _around(points: np.ndarray, half: float) -> np.ndarray:
    """Square boxes of half-side `half` (pixels) around display `points` (N, 2), as (N, 4) extents."""
    return np.hstack([points - half, points + half]).reshape(-1, 4)


def _line_boxes(ax: Axes, px_per_pt: float) -> np.ndarray:
    """Small boxes along every line of `ax` (every 3 pixels) and around each of its markers."""
    out = []
    for line in ax.get_lines():
        data = np.column_stack([line.get_xdata(orig=False), line.get_ydata(orig=False)]).astype(float)
        data = data[np.isfinite(data).all(axis=1)]
        if not line.get_visible() or len(data) == 0:
            continue
        xy = line.get_transform().transform(data)
        if line.get_marker() not in (None, "None", "", " ", "none"):
            out.append(_around(xy, line.get_markersize() * px_per_pt / 2))
        if line.get_linestyle() not in ("None", "", " ", "none") and len(xy) > 1:
            for a, b in zip(xy[:-1], xy[1:]):
                n = max(2, int(np.hypot(*(b - a)) / 3))
                samples = a + np.linspace(0, 1, n)[:, None] * (b - a)
                out.append(_around(samples, max(line.get_linewidth() * px_per_pt / 2, 1.0)))
    return np.vstack(out) if out else np.zeros((0, 4))


def _overlap(box: Bbox, others: np.ndarray) -> float:
    """The summed area (pixels²) of `box` covered by each of the (N, 4) boxes `others`."""
    w = np.minimum(box.x1, others[:, 2]) - np.maximum(box.x0, others[:, 0])
    h = np.minimum(box.y1, others[:, 3]) - np.maximum(box.y0, others[:, 1])
    return float((np.clip(w, 0, None) * np.clip(h, 0, None)).sum())


def _outside(box: Bbox, frame: Bbox) -> float:
    """The area of `box` outside `frame`."""
    return box.width * box.height - _overlap(box, _boxes([frame]))


def place_labels(ax: Axes, x: Sequence[float], y: Sequence[float], texts: Sequence[str], *,
                 avoid: Sequence[Bbox] = (), marker_radius: float = 4.0, avoid_lines: bool = True,
                 colors: Sequence | None = None, fontsize: float = 8) -> list[Annotation]:
    """Annotate point ``(x[i], y[i])`` (data coordinates) with ``texts[i]``, each label where it collides least.

    A label collides with the labels already on the axes (these and earlier calls'), with a box of `marker_radius`
    points around each of these points, with the pixel boxes in `avoid` (error bars, say) and, if `avoid_lines`,
    with every line and marker drawn on `ax`; it must stay inside the axes.  For each label the offsets are tried
    nearest first, and the first free one wins (else the one with the least overlap).  Labels further than 10
    points from their point get a thin grey leader line.  Returns the annotations, in the order of `texts`.
    """
    if not len(x) == len(y) == len(texts):
        raise ValueError(f"place_labels needs as many x, y and texts; got {len(x)}, {len(y)} and {len(texts)}")
    fig = ax.figure
    px_per_pt = fig.dpi / 72
    frame = ax.get_window_extent()
    centres = ax.transData.transform(np.column_stack([np.asarray(x, float), np.asarray(y, float)]))
    taken = np.vstack([_around(centres, marker_radius * px_per_pt), _boxes(avoid),
                       _boxes([text_box(t) for t in ax.texts if t.get_visible() and t.get_text()]),
                       _line_boxes(ax, px_per_pt) if avoid_lines else np.zeros((0, 4))])
    labels = []
    for i, text in enumerate(texts):
        xy = (float(x[i]), float(y[i]))
        style = dict(textcoords="offset points", fontsize=fontsize, annotation_clip=False,
                     color=None if colors is None else colors[i])
        label = ax.annotate(text, xy, xytext=(0, 0), **style)
        best = None
        for radius in RADII:
            for dx, dy in DIRECTIONS:
                norm = math.hypot(dx, dy)
                label.set_position((radius * dx / norm, radius * dy / norm))
                label.set_ha("left" if dx > 0 else "right" if dx < 0 else "center")
                label.set_va("bottom" if dy > 0 else "top" if dy < 0 else "center")
                box = text_box(label)
                cost = _overlap(box, taken) + 1e3 * _outside(box, frame)
                if best is None or cost < best[0]:
                    best = (cost, label.get_position(), label.get_ha(), label.get_va(), radius)
                if cost == 0:
                    break
            if best[0] == 0:
                break
        _, offset, ha, va, radius = best
        label.remove()                                  # drawn again at its place, with a leader line if far
        leader = dict(arrowstyle="-", color="0.55", lw=0.6, shrinkA=1, shrinkB=marker_radius) if radius > 10 else None
        label = ax.annotate(text, xy, xytext=offset, ha=ha, va=va, arrowprops=leader, **style)
        taken = np.vstack([taken, _boxes([text_box(label)])])
        labels.append(label)
    return labels
