"""Criteria: rank the filters of a trained network by importance.

Molchanov et al. 2017 (arXiv 1611.06440), Sec. 2.2, compare cheap criteria with an
*oracle* (the true loss change when a filter is removed).  Every data criterion
here looks at the same thing, the **post-activation map** z of each filter: the
output of the conv after its BatchNorm and non-linearity, i.e. the map the next
layer reads (`surgery.Coupling.capture`).

One pass over the data collects per-channel statistics of z (`MapStats`); each
criterion is then a short formula over those statistics (or over the weights).
Scores are 1-D float CPU tensors, one per filter, **higher = more important**.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import pandas as pd
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from .surgery import Coupling, find_couplings, trace

Scores = dict[str, torch.Tensor]
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class MapStats:
    """Per-channel sums over the post-activation maps z of one conv, shape (C,) each (float64)."""

    examples: int = 0          # N: examples seen
    positions: int = 0         # N * H * W: values seen per channel
    total: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    total_sq: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    zeros: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    taylor: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))

    def add(self, z: torch.Tensor, grad: torch.Tensor | None) -> None:
        """Accumulate one batch: z and dC/dz of shape (N, C, H, W)."""
        n, c, h, w = z.shape
        if self.examples == 0:
            self.total, self.total_sq, self.zeros, self.taylor = (torch.zeros(c, dtype=torch.float64)
                                                                  for _ in range(4))
        z64 = z.detach().double()
        self.examples += n
        self.positions += n * h * w
        self.total += z64.sum(dim=(0, 2, 3)).cpu()
        self.total_sq += z64.square().sum(dim=(0, 2, 3)).cpu()
        self.zeros += (z == 0).sum(dim=(0, 2, 3)).double().cpu()
        if grad is not None:
            # Taylor (Eq. 8): |mean over positions of dC/dz * z| per example, summed over examples
            self.taylor += (grad.double() * z64).mean(dim=(2, 3)).abs().sum(dim=0).cpu()


# ---------------------------------------------------------------- the criteria
def taylor(conv: nn.Conv2d, stats: MapStats) -> torch.Tensor:
    """Θ_TE(z_k) = |1/M Σ_m ∂C/∂z_k,m · z_k,m|, per example, averaged over examples (Eq. 8)."""
    return stats.taylor / stats.examples


def mean_activation(conv: nn.Conv2d, stats: MapStats) -> torch.Tensor:
    """Θ_MA(z_k) = mean of z_k over all examples and positions."""
    return stats.total / stats.positions


def std_activation(conv: nn.Conv2d, stats: MapStats) -> torch.Tensor:
    """Θ_std(z_k) = standard deviation (population) of z_k over all examples and positions."""
    mean = stats.total / stats.positions
    return (stats.total_sq / stats.positions - mean.square()).clamp_min(0).sqrt()


def apoz(conv: nn.Conv2d, stats: MapStats) -> torch.Tensor:
    """1 − APoZ (Hu et al. 2016): APoZ is the fraction of zeros in z_k; more zeros = less important."""
    return 1.0 - stats.zeros / stats.positions


def l1(conv: nn.Conv2d, stats: MapStats | None = None) -> torch.Tensor:
    """Σ|W_k|: L1 norm of filter k's weights, shape (C_out, C_in, kh, kw) -> (C_out,)."""
    return conv.weight.detach().abs().sum(dim=(1, 2, 3))


def l2(conv: nn.Conv2d, stats: MapStats | None = None) -> torch.Tensor:
    """sqrt(Σ W_k²): L2 norm of filter k's weights."""
    return conv.weight.detach().square().sum(dim=(1, 2, 3)).sqrt()


CRITERIA: dict[str, Callable[[nn.Conv2d, MapStats | None], torch.Tensor]] = {
    "taylor": taylor,
    "mean_activation": mean_activation,
    "std_activation": std_activation,
    "apoz": apoz,
    "l1": l1,
    "l2": l2,
    "random": None,  # seeded uniform scores; see rank_all
}
DATA_CRITERIA = ("taylor", "mean_activation", "std_activation", "apoz")


def _validate_criteria(names: Sequence[str]) -> None:
    for name in names:
        if name not in CRITERIA:
            raise ValueError(f"unknown criterion {name!r}; valid ones are {sorted(CRITERIA)} "
                             "(and 'oracle', through oracle())")


def _capture_points(model: nn.Module) -> dict[str, Coupling]:
    couplings = {n: c for n, c in find_couplings(model).items() if isinstance(c, Coupling)}
    missing = [n for n, c in couplings.items() if c.capture is None]
    if missing:
        raise NotImplementedError(f"{missing} use a functional non-linearity (F.relu); use nn.ReLU "
                                  "modules so criteria can read the post-activation map")
    return couplings


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def collect_map_stats(
    model: nn.Module,
    batches: Batches,
    *,
    gradients: bool = True,
    loss_fn: Callable = F.cross_entropy,
    max_batches: int | None = None,
    progress: bool = False,
) -> dict[str, MapStats]:
    """One pass over `batches` (eval mode) collecting `MapStats` of every prunable conv's map z.

    With ``gradients=True`` the loss C = ``loss_fn(model(x), y)`` is back-propagated to
    every z (only to the maps, never into ``.grad`` of the weights) for the Taylor criterion.
    Hooks are removed and the train/eval mode restored, also when an error is raised.
    """
    couplings = _capture_points(model)
    modules = dict(model.named_modules())
    device = _model_device(model)
    maps: dict[str, tuple[torch.Tensor, int]] = {}
    stats = {name: MapStats() for name in couplings}

    def keep(name):
        def hook(module, inputs, output):
            maps[name] = (output, output._version)
        return hook

    hooks = [modules[c.capture].register_forward_hook(keep(n)) for n, c in couplings.items()]
    was_training = model.training
    model.eval()
    try:
        for i, (x, y) in enumerate(tqdm(batches, desc="ranking", disable=not progress, leave=False)):
            if max_batches is not None and i >= max_batches:
                break
            x, y = x.to(device), y.to(device)
            with torch.set_grad_enabled(gradients):
                # inputs that require grad give every z a graph, also under frozen layers
                out = model(x.detach().requires_grad_(gradients) if gradients else x)
                zs = [maps[n][0] for n in couplings]
                grads = (torch.autograd.grad(loss_fn(out, y), zs, allow_unused=True) if gradients
                         else [None] * len(zs))
            for (name, (z, version)), g in zip(maps.items(), grads):
                if z._version != version:
                    raise RuntimeError(f"the map of {name} was changed in place after "
                                       f"{couplings[name].capture}; criteria cannot read it")
                stats[name].add(z, torch.zeros_like(z) if gradients and g is None else g)
            maps.clear()
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return stats


def normalize_per_layer(scores: Mapping[str, torch.Tensor], how: str | None = "l2") -> Scores:
    """Layer-wise L2 normalisation (Eq. 9): Θ̂ = Θ / sqrt(Σ_j Θ_j²) within each layer; None: unchanged."""
    if how is None:
        return dict(scores)
    if how != "l2":
        raise ValueError(f"normalize must be 'l2' or None, got {how!r}")
    return {n: s / s.norm() if s.norm() > 0 else s.clone() for n, s in scores.items()}


def rank_all(
    model: nn.Module,
    batches: Batches | None,
    criteria: Sequence[str],
    *,
    loss_fn: Callable = F.cross_entropy,
    normalize: str | None = "l2",
    seed: int = 0,
    max_batches: int | None = None,
    progress: bool = False,
) -> dict[str, Scores]:
    """Score every prunable conv's filters with several criteria in one pass over the data.

    Returns ``{criterion: {conv name: (C,) float32 CPU scores}}``, higher = more important.
    """
    _validate_criteria(criteria)
    needs_data = any(c in DATA_CRITERIA for c in criteria)
    if needs_data and batches is None:
        raise ValueError(f"criteria {[c for c in criteria if c in DATA_CRITERIA]} need batches of (inputs, targets)")
    stats = (collect_map_stats(model, batches, gradients="taylor" in criteria, loss_fn=loss_fn,
                               max_batches=max_batches, progress=progress)
             if needs_data else {n: None for n in _capture_points(model)})
    modules = dict(model.named_modules())
    result = {}
    for criterion in criteria:
        if criterion == "random":
            gen = torch.Generator().manual_seed(seed)
            raw = {n: torch.rand(modules[n].out_channels, generator=gen, dtype=torch.float64) for n in stats}
        else:
            raw = {n: CRITERIA[criterion](modules[n], s) for n, s in stats.items()}
        raw = {n: s.detach().float().cpu() for n, s in raw.items()}
        # random is the uniform floor over *all* filters: dividing by each layer's norm would favour wide layers
        result[criterion] = raw if criterion == "random" else normalize_per_layer(raw, normalize)
    return result


def rank_filters(
    model: nn.Module,
    batches: Batches | None,
    criterion: str,
    *,
    loss_fn: Callable = F.cross_entropy,
    normalize: str | None = "l2",
    seed: int = 0,
    max_batches: int | None = None,
    progress: bool = False,
) -> Scores:
    """Score the filters of every prunable conv: ``{conv name: (C,) float CPU tensor}``.

    Args:
        model: a trained network (weights and train/eval mode are left unchanged).
        batches: iterable of ``(inputs, targets)``; only needed by data criteria.
        criterion: one of `CRITERIA` ("taylor", "l1", "l2", "mean_activation",
            "std_activation", "apoz", "random").
        normalize: "l2" for the paper's layer-wise normalisation, None for raw scores.
        seed: for "random" (uniform in [0, 1) for every filter, never normalised, so that
            pruning by it picks filters uniformly from the whole network).
    """
    return rank_all(model, batches, [criterion], loss_fn=loss_fn, normalize=normalize, seed=seed,
                    max_batches=max_batches, progress=progress)[criterion]


# ---------------------------------------------------------------- the oracle
def _loss_from(gm: fx.GraphModule, x, y, env: dict, loss_fn: Callable) -> float:
    """Run only the part of the graph not already in `env` and return the mean loss."""
    out = fx.Interpreter(gm).run(x, initial_env=env)
    return float(loss_fn(out, y))


def oracle(
    model: nn.Module,
    batches: Batches,
    *,
    loss_fn: Callable = F.cross_entropy,
    max_batches: int | None = None,
    progress: bool = True,
) -> Scores:
    """The oracle: |ΔC| when filter k alone is removed (its map z_k set to zero), per filter.

    C is the mean of ``loss_fn`` over the given examples, in eval mode.  Costs one
    forward pass of the network *after* the layer for every filter: use it on small
    networks and a few batches.  Returns raw (unnormalised) |ΔC| per conv.
    """
    couplings = _capture_points(model)
    was_training = model.training
    model.eval()
    try:
        gm = fx.GraphModule(model, trace(model))
        nodes = list(gm.graph.nodes)
        capture_at = {n: next(i for i, nd in enumerate(nodes) if nd.op == "call_module" and nd.target == c.capture)
                      for n, c in couplings.items()}
        data = [b for i, b in enumerate(batches) if max_batches is None or i < max_batches]
        device = _model_device(model)
        deltas = {n: torch.zeros(dict(model.named_modules())[n].out_channels, dtype=torch.float64)
                  for n in couplings}
        total = sum(len(y) for _, y in data)
        bar = tqdm(total=sum(len(d) for d in deltas.values()) * len(data), desc="oracle",
                   disable=not progress, leave=False)
        with torch.no_grad():
            for x, y in data:
                x, y = x.to(device), y.to(device)
                interp = fx.Interpreter(gm, garbage_collect_values=False)
                base = float(loss_fn(interp.run(x), y))
                for name, at in capture_at.items():
                    prefix = {nd: interp.env[nd] for nd in nodes[:at]}
                    z = interp.env[nodes[at]]
                    for k in range(z.shape[1]):
                        masked = z.clone()
                        masked[:, k] = 0
                        loss = _loss_from(gm, x, y, {**prefix, nodes[at]: masked}, loss_fn)
                        deltas[name][k] += (loss - base) * len(y)
                        bar.update()
        bar.close()
    finally:
        model.train(was_training)
    return {n: (d / total).abs().float() for n, d in deltas.items()}


# ---------------------------------------------------------------- Table 1
def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-D score vectors (ties get average ranks)."""
    if len(a) != len(b):
        raise ValueError(f"score vectors differ in length: {len(a)} vs {len(b)}")
    rho = spearmanr(a.double().numpy(), b.double().numpy()).statistic
    return float(rho)


def spearman_table(all_scores: Mapping[str, Mapping[str, torch.Tensor]], oracle_scores: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """The paper's Table 1: Spearman ρ of each criterion against the oracle.

    Args:
        all_scores: ``{criterion: {conv: raw (unnormalised) scores}}``.
        oracle_scores: ``{conv: |ΔC|}`` from `oracle`.

    Returns:
        DataFrame, one row per criterion: a column per layer, ``per_layer_mean``,
        ``all_layers_raw`` (scores pooled across layers as they are) and ``all_layers_l2``
        (each layer L2-normalised first).  The oracle is compared raw: |ΔC| is comparable across layers.
    """
    layers = list(oracle_scores)
    pooled_oracle = torch.cat([oracle_scores[n] for n in layers])
    rows = {}
    for criterion, scores in all_scores.items():
        per_layer = {n: spearman(scores[n], oracle_scores[n]) for n in layers}
        l2_scores = normalize_per_layer({n: scores[n] for n in layers}, "l2")
        rows[criterion] = {
            **per_layer,
            "per_layer_mean": sum(per_layer.values()) / len(layers),
            "all_layers_raw": spearman(torch.cat([scores[n] for n in layers]), pooled_oracle),
            "all_layers_l2": spearman(torch.cat([l2_scores[n] for n in layers]), pooled_oracle),
        }
    return pd.DataFrame.from_dict(rows, orient="index")
