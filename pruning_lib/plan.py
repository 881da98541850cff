"""Planning: turn scores (or target widths) into a plan, plain data that surgery applies.

A plan is ``{conv name: [filter indices to remove]}``, for example ``{"features.10": [3, 17]}``; each name is a
channel group's (its first producer conv: in a chain, the conv itself).  A notebook can print it, edit it and
save it.  Nothing here changes a model.

- `plan_from_scores`: the globally lowest-scored filters, with a floor per layer and blocks of
  `multiple_of` filters (widths that vectorise well);
- `flops_per_channel` and `regularised_scores`: the paper's FLOPs regularisation, Θ − λ·Θ_flops (Sec. 2.3);
- `widths_for_budgets` and `plan_keeping`: one width per group that saves several budgets at once (time,
  parameters, FLOPs) at the most importance kept: a knapsack by dynamic programming with Lagrange prices;
- `plan_from_widths`: "keep the first k filters of each conv", for rebuilding a pruned architecture;
- `transfer_widths`: the widths of one network's pruning applied to another (the post's VGG16 setting).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from .graph.groups import ChannelGroup, channel_groups
from .graph.layer_types import channels_of, layer_type
from .measure.counting import flops_per_layer

Plan = dict[str, list[int]]

__all__ = ["Plan", "flops_per_channel", "layer_floors", "plan_from_scores", "plan_from_widths", "plan_keeping",
           "regularised_scores", "transfer_widths", "widths_for_budgets"]


def _removal_blocks(scores: torch.Tensor, multiple_of: int) -> list[tuple[float, list[int]]]:
    """A layer's filters from least to most important, in blocks that keep its width a multiple of `multiple_of`.

    The first block takes ``C % multiple_of`` filters (if any), the others `multiple_of` each;
    a block's score is the mean score of its filters.
    """
    order = torch.sort(scores, stable=True).indices.tolist()
    first = len(order) % multiple_of or multiple_of
    cuts = [0, *range(first, len(order) + 1, multiple_of)]
    return [(float(scores[order[a:b]].mean()), order[a:b]) for a, b in zip(cuts, cuts[1:])]


def _as_count(name: str, value: Any) -> int:
    """An int-like count (Python or numpy integer, not a bool or a float), else a ValueError naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    return int(value)


def _as_scores(scores: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Each layer's scores as a 1-D float64 CPU tensor (tensors, numpy arrays and lists accepted), all finite."""
    out = {}
    for name, s in scores.items():
        t = torch.as_tensor(np.asarray(s.detach().cpu() if isinstance(s, torch.Tensor) else s, dtype=np.float64))
        if t.dim() != 1 or not len(t):
            raise ValueError(f"scores[{name!r}] must be a non-empty 1-D vector, one score per filter; got shape {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).sum())
            raise ValueError(f"scores[{name!r}] has {bad} non-finite values (NaN or inf): the ranking failed "
                             "(a NaN loss or input?); no plan can be made from them")
        out[name] = t
    return out


def layer_floors(widths: Mapping[str, int], *, min_keep: int = 1, max_fraction: float | None = None) -> dict[str, int]:
    """The fewest filters each layer may keep: `min_keep`, and with `max_fraction` (a per-layer cap,
    as Torch-Pruning's ``max_pruning_ratio``) at least ``ceil((1 - max_fraction) * width)`` of `widths`
    (the *unpruned* widths), so global selection cannot empty one layer."""
    if max_fraction is not None and not 0 < max_fraction <= 1:
        raise ValueError(f"max_fraction is the largest share of a layer's filters to remove, in (0, 1]; got {max_fraction}")
    cap = 0.0 if max_fraction is None else 1.0 - max_fraction
    return {n: max(min_keep, math.ceil(cap * w - 1e-9)) for n, w in widths.items()}


def plan_from_scores(
    scores: Mapping[str, torch.Tensor],
    num_filters: int | None = None,
    *,
    fraction: float | None = None,
    min_keep: int | Mapping[str, int] = 1,
    multiple_of: int = 1,
) -> Plan:
    """Select the globally lowest-scored filters, keeping at least `min_keep` per layer.

    Args:
        scores: ``{conv name: (C,) scores}``, higher = more important (normalise per layer
            first when comparing layers, as the paper does).
        num_filters: how many filters to remove in total; or
        fraction: the fraction of all filters to remove (rounded to the nearest count).
        min_keep: the floor: no layer keeps fewer filters than this; a mapping gives each layer
            its own floor (`layer_floors`: a per-layer cap on the fraction removed).
        multiple_of: remove filters in blocks so every layer keeps a multiple of this many
            (8 or 16 suit CPU vector units); then at most `num_filters` are removed.

    Returns:
        A plan ``{conv name: sorted indices}`` with an entry for every layer (maybe empty).
    """
    scores = _as_scores(scores)
    total = sum(len(s) for s in scores.values())
    if (num_filters is None) == (fraction is None):
        raise ValueError("give exactly one of num_filters or fraction")
    if fraction is not None:
        if isinstance(fraction, (bool, np.bool_)) or not isinstance(fraction, (int, float, np.floating, np.integer)) \
                or not 0.0 <= fraction < 1.0:
            raise ValueError(f"fraction must be a number in [0, 1), got {fraction!r}")
        num_filters = round(fraction * total)
    num_filters = _as_count("num_filters", num_filters)
    floors = {n: _as_count("min_keep", min_keep[n] if isinstance(min_keep, Mapping) else min_keep) for n in scores}
    multiple_of = _as_count("multiple_of", multiple_of)
    if min(floors.values()) < 1 or multiple_of < 1:
        raise ValueError(f"min_keep and multiple_of must be >= 1 (no layer is emptied), got {min_keep}, {multiple_of}")
    capacity = sum(max(len(s) - floors[n], 0) for n, s in scores.items())
    if not 0 <= num_filters <= capacity:
        floor = f"a floor of {min_keep} per layer" if not isinstance(min_keep, Mapping) else "each layer's floor (cap)"
        raise ValueError(f"cannot remove {num_filters} filters: {total} in all, at most {capacity} with {floor}")
    names = list(scores)
    blocks = [(score, i, idx) for i, n in enumerate(names) for score, idx in _removal_blocks(scores[n], multiple_of)]
    left = {n: len(scores[n]) for n in names}
    plan: Plan = {n: [] for n in names}
    for _, i, idx in sorted(blocks, key=lambda b: b[0]):  # sorted() is stable: ties keep layer order
        name = names[i]
        if len(idx) <= num_filters and left[name] - len(idx) >= floors[name]:
            plan[name] += idx
            left[name] -= len(idx)
            num_filters -= len(idx)
    return {n: sorted(v) for n, v in plan.items()}


def plan_from_widths(current: Mapping[str, int], widths: Mapping[str, int]) -> Plan:
    """The plan that keeps the first ``widths[conv]`` filters of each named conv (removes the last ones).

    Args:
        current: each conv's filters now, ``{conv: n}``.
        widths: the filters to keep, ``{conv: k}`` with ``1 <= k <= n``; convs not named keep all.

    Raises:
        ValueError: a conv that `current` lacks, or a width outside ``1..n``.
    """
    unknown = sorted(set(widths) - set(current))
    if unknown:
        raise ValueError(f"widths name {unknown}, convs that the model lacks (its convs: {list(current)})")
    plan: Plan = {}
    for conv, keep in widths.items():
        n = current[conv]
        if isinstance(keep, bool) or not isinstance(keep, (int, np.integer)) or not 1 <= keep <= n:
            raise ValueError(f"widths[{conv!r}] = {keep!r}: {conv} has {n} filters, so keep 1..{n}")
        if keep < n:
            plan[conv] = list(range(int(keep), n))
    return plan


def flops_per_channel(model: nn.Module, input_shape: Sequence[int],
                      groups: Mapping[str, ChannelGroup] | None = None) -> dict[str, float]:
    """GFLOPs per image that removing one channel of each prunable group saves, ``{group: GFLOPs}``.

    Every member's FLOPs are linear in the group's channels (FLOPs count only convs and Linears): a producer's
    output rows, a depthwise conv's channels, a reader's input columns (a Linear's column blocks), so one
    channel costs the sum over members of the member's FLOPs divided by its channels.  In a chain that is the
    conv's FLOPs per filter plus the next layer's per input channel.  ``input_shape`` is one image's ``(C, H, W)``;
    `groups` the model's channel groups when the caller has them (the model is not traced again).
    """
    flops = flops_per_layer(model, (1, *input_shape)).set_index("module")["flops"]
    modules = dict(model.named_modules())
    cost = {}
    for g in (channel_groups(model) if groups is None else groups).values():
        if g.refused:
            continue
        total = 0.0
        for m in dict.fromkeys(g.members):
            module, entry = modules[m.module], layer_type(modules[m.module])
            if m.role == "in":
                channels = getattr(module, entry.columns).shape[entry.column_dim] // m.span
            else:
                channels = channels_of(module) // m.span
            total += flops.get(m.module, 0) / channels if channels else 0.0
        cost[g.name] = total / 1e9
    return cost


def regularised_scores(scores: Mapping[str, torch.Tensor], cost: Mapping[str, float], lam: float) -> dict[str, torch.Tensor]:
    """Θ − λ · Θ_flops (paper, Sec. 2.3), with Θ_flops a layer's FLOPs per filter relative to the most costly layer.

    Scores are L2-normalised per layer (so each is at most 1), and Θ_flops is in [0, 1]:
    λ of about 0.1 nudges ties toward costly layers, λ >= 1 dominates the criterion.
    """
    if lam == 0:
        return dict(scores)
    top = max(cost.values())
    return {n: s - lam * cost[n] / top for n, s in scores.items()}


def transfer_widths(
    source_kept: Sequence[float],
    target: Mapping[str, int],
    *,
    remove_fraction: float,
    multiple_of: int = 1,
    min_keep: int = 1,
) -> dict[str, int]:
    """Filters to keep per conv of `target` so that its layers are pruned the way a source network was.

    `source_kept` is the fraction of filters each conv of the source kept, in forward order (e.g.
    notebook 03's last widths over its first ones).  Each target conv takes the source's fraction at
    the same relative depth (linear interpolation over 0..1), all scaled by one factor chosen so that
    ``remove_fraction`` of all target filters are removed, as closely as blocks of `multiple_of` allow.
    Every width is a multiple of `multiple_of` (at least ``max(min_keep, multiple_of)``), at most the
    original width.
    """
    if not 0 <= remove_fraction < 1:
        raise ValueError(f"remove_fraction must be in [0, 1); got {remove_fraction}")
    if not source_kept or any(not 0 < f <= 1 for f in source_kept):
        raise ValueError(f"source_kept must be fractions in (0, 1]; got {list(source_kept)}")
    names, widths = list(target), np.array(list(target.values()), dtype=float)
    depth_src = np.linspace(0, 1, len(source_kept)) if len(source_kept) > 1 else np.zeros(1)
    depth_tgt = np.linspace(0, 1, len(names)) if len(names) > 1 else np.zeros(1)
    base = np.interp(depth_tgt, depth_src, np.asarray(source_kept, dtype=float))
    floor = max(min_keep, multiple_of)
    goal = (1 - remove_fraction) * widths.sum()

    def kept(scale: float) -> np.ndarray:
        k = np.round(np.clip(scale * base, 0, 1) * widths / multiple_of) * multiple_of
        return np.clip(k, np.minimum(floor, widths), widths)

    lo, hi = 0.0, 1.0 / max(base.min(), 1e-9)
    for _ in range(60):   # kept(scale).sum() is non-decreasing in scale
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if kept(mid).sum() < goal else (lo, mid)
    best = min((kept(lo), kept(hi)), key=lambda k: abs(k.sum() - goal))
    return {n: int(k) for n, k in zip(names, best)}


def plan_keeping(scores: Mapping[str, Any], widths: Mapping[str, int]) -> Plan:
    """The plan that keeps the ``widths[group]`` highest-scored channels of each group (the lowest ones go)."""
    scores = _as_scores(scores)
    plan: Plan = {}
    for name, keep in widths.items():
        order = torch.sort(scores[name], stable=True).indices.tolist()
        plan[name] = sorted(order[: len(order) - int(keep)])
    return plan


def _lost(scores: torch.Tensor, width: int) -> float:
    """The importance removed when a group keeps its `width` highest-scored channels."""
    ordered = np.sort(scores.numpy())
    return float(ordered[: len(ordered) - int(width)].sum())


def _cheapest(values: Sequence[Sequence[float]], saved: Sequence[Sequence[float]], ask: float,
              resolution: int) -> list[int] | None:
    """The multiple-choice knapsack: one option per group, minimising the summed `values` while the summed `saved`
    reaches `ask`; None when no choice does.  Dynamic programming over `resolution` bins of the ask: an option's
    saving is rounded *down* to a bin (so the choice saves at least `ask`), savings beyond the ask all land in the
    last bin."""
    bins = resolution
    n = bins + 1
    step = ask / bins
    best = np.full(n, np.inf)
    best[0] = 0.0
    back = []
    for vals, savs in zip(values, saved):
        new, pick, came = np.full(n, np.inf), np.full(n, -1), np.full(n, -1)
        for j, (value, s) in enumerate(zip(vals, savs)):
            b = min(bins, max(0, int(math.floor(s / step + 1e-9))))
            cand = best + value
            shifted, origin = np.full(n, np.inf), np.full(n, -1)
            shifted[b:bins], origin[b:bins] = cand[:bins - b], np.arange(bins - b)
            tail = np.arange(bins - b, n)
            k = int(tail[np.argmin(cand[tail])])
            shifted[bins], origin[bins] = cand[k], k
            better = shifted < new
            new[better], pick[better], came[better] = shifted[better], j, origin[better]
        back.append((pick, came))
        best = new
    if not np.isfinite(best[bins]):
        return None
    chosen, at = [], bins
    for pick, came in reversed(back):
        chosen.append(int(pick[at]))
        at = int(came[at])
    return chosen[::-1]


def widths_for_budgets(scores: Mapping[str, Any], options: Mapping[str, Sequence[tuple[int, Mapping[str, float]]]],
                       asks: Mapping[str, float], *, resolution: int = 400) -> dict[str, int]:
    """One width per group that saves at least ``asks[r]`` of every resource r at the least importance removed.

    Args:
        scores: ``{group: (size,) scores}``, normalised per group (as the loop compares them); keeping width w
            removes the group's ``size - w`` lowest scores.
        options: ``{group: [(width, {resource: saving}), ...]}``: the widths each group may take (its current one
            among them, saving nothing) and what each saves of each resource ("latency" in ms, "params",
            "flops", ...), with the other groups as they are.
        asks: ``{resource: amount to save}``; a resource not asked for (or asked for 0) is free.

    **Why a Lagrangian.**  Several budgets at once make a knapsack with several constraints.  The first resource
    asked for (the caller puts time first: its costs are a staircase, which a dynamic program handles exactly) is
    the dynamic program's dimension, in `resolution` bins; each other resource r enters the objective with a price
    μ_r per share of its ask, ``importance removed − Σ_r μ_r · saving_r / ask_r``, and μ_r is the smallest price at
    which r's ask is met, found by bisection (prices are adjusted in turn when there are several).  A price of 0
    means that saving the first resource already saves enough of r.  A two-dimensional dynamic program would be
    exact for two budgets but grows with the product of the bins; the Lagrangian takes any number of budgets at
    the cost of a duality gap (the choice may save more of a priced resource than asked).

    Savings are added up over groups, each measured with the others as they are: the caller checks the choice's
    real savings (`cost.budgets`), since neither time nor parameters add up exactly over neighbouring groups.
    Where an ask cannot be met, the most the options save of it is taken.
    """
    scores = _as_scores(scores)
    groups = [g for g in options if g in scores]
    wanted = {r: float(a) for r, a in asks.items() if a > 0}
    if not wanted or not groups:
        return {g: max(w for w, _ in options[g]) for g in groups}
    lost = {g: [_lost(scores[g], w) for w, _ in options[g]] for g in groups}
    saved = {r: {g: [float(sv.get(r, 0.0)) for _, sv in options[g]] for g in groups} for r in wanted}
    most = {r: sum(max(v) for v in saved[r].values()) for r in wanted}
    wanted = {r: min(a, most[r]) for r, a in wanted.items() if most[r] > 0}
    if not wanted:
        return {g: max(w for w, _ in options[g]) for g in groups}
    first, *others = wanted
    prices = dict.fromkeys(others, 0.0)
    seen: list[list[int]] = []                 # every choice tried; the best one that meets every ask is returned

    def choose(prices: Mapping[str, float]) -> list[int]:
        values = [[lost[g][j] - sum(mu * saved[r][g][j] / wanted[r] for r, mu in prices.items())
                   for j in range(len(options[g]))] for g in groups]
        picked = _cheapest(values, [saved[first][g] for g in groups], wanted[first], resolution)
        if picked is None:          # rounding down to bins: take each group's option saving the most
            picked = [int(np.argmax(saved[first][g])) for g in groups]
        seen.append(picked)
        return picked

    def achieved(picked: list[int], r: str) -> float:
        return sum(saved[r][g][j] for g, j in zip(groups, picked))

    def meets(picked: list[int], r: str) -> bool:
        return achieved(picked, r) >= wanted[r] * (1 - 1e-9)

    choose(prices)
    for _ in range(8 if len(others) > 1 else 1):
        for r in others:                       # the smallest price of r that meets r's ask, the others' fixed
            if meets(choose({**prices, r: 0.0}), r):
                prices[r] = 0.0
                continue
            low, high = 0.0, 1.0
            while not meets(choose({**prices, r: high}), r) and high < 1e6:
                low, high = high, high * 8
            for _ in range(24):
                mid = (low + high) / 2
                low, high = (mid, high) if not meets(choose({**prices, r: mid}), r) else (low, mid)
            prices[r] = high
        if all(meets(choose(prices), r) for r in wanted):
            break

    def total_lost(picked: list[int]) -> float:
        return sum(lost[g][j] for g, j in zip(groups, picked))

    def shortfall(picked: list[int]) -> float:
        return sum(max(0.0, 1 - achieved(picked, r) / wanted[r]) for r in wanted)

    feasible = [p for p in seen if shortfall(p) <= 1e-9]
    if feasible:
        best = min(feasible, key=total_lost)
    else:
        best = _repair(min(seen, key=shortfall), {g: options[g] for g in groups}, shortfall)
    return {g: options[g][j][0] for g, j in zip(groups, best)}


def _repair(picked: list[int], options: Mapping[str, Sequence], shortfall) -> list[int]:
    """Where no price meets every ask (the Lagrangian's duality gap), change one group's option at a time, each
    time the change that cuts the summed shortfall most, until none is left or no change helps."""
    picked = list(picked)
    while shortfall(picked) > 1e-9:
        moves = [(shortfall(picked[:i] + [j] + picked[i + 1:]), i, j)
                 for i, g in enumerate(options) for j in range(len(options[g])) if j != picked[i]]
        short, i, j = min(moves, default=(math.inf, -1, -1))
        if short >= shortfall(picked) - 1e-12:
            break
        picked[i] = j
    return picked
