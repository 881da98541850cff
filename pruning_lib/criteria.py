"""Criteria: rank the filters of a trained network by importance.

Molchanov et al. 2017 (arXiv 1611.06440), Sec. 2.2, compare cheap criteria with an *oracle* (the
true loss change when a filter is removed; see `oracle`).  Every data criterion here looks at the
same thing, the **post-activation map** z of each filter: the output of the conv after its
BatchNorm and non-linearity, i.e. the map the next layer reads (`couplings.Coupling.capture`).

The paper's criterion, in one function (`taylor`): removing filter k sets z_k to zero, and the
first-order Taylor expansion of the loss C around z_k gives the change
ΔC ≈ −Σ_m ∂C/∂z_{k,m} · z_{k,m}; its absolute value, per example and averaged over the M positions
of the map, is Θ_TE (Eq. 8).

One pass over the data (`collect_map_stats`) collects per-channel statistics of z (`MapStats`);
each criterion is then a short formula over those statistics or over the weights.  Scores are 1-D
float CPU tensors, one per filter, **higher = more important**.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .couplings import Coupling, find_couplings
from .runtime import mode, model_device

__all__ = ["CRITERIA", "DATA_CRITERIA", "MapStats", "check_scores", "collect_map_stats", "normalize_per_layer", "rank_all",
           "rank_filters", "taylor"]

Scores = dict[str, torch.Tensor]
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def taylor(z: torch.Tensor, dz: torch.Tensor) -> torch.Tensor:
    """The Taylor criterion of one batch (Eq. 8): Θ_TE(z_k) = |1/M Σ_m ∂C/∂z_{k,m} · z_{k,m}|, per example.

    Args:
        z: the post-activation maps, (N, C, H, W); M = H·W positions per map.
        dz: ∂C/∂z, the loss's gradient with respect to them, same shape.

    Returns:
        (N, C): one value per example and filter; a filter's score is their mean over examples.
        The |·| is taken per example, *before* averaging: gradients of opposite sign on different
        examples must not cancel.
    """
    return (dz * z).mean(dim=(2, 3)).abs()


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
            self.taylor += taylor(z64, grad.double()).sum(dim=0).cpu()   # summed over examples


# ---------------------------------------------------------------- the criteria
def taylor_score(conv: nn.Conv2d, stats: MapStats, generator: torch.Generator | None = None) -> torch.Tensor:
    """Θ_TE(z_k): `taylor` per example, averaged over all examples seen."""
    return stats.taylor / stats.examples


def mean_activation(conv: nn.Conv2d, stats: MapStats, generator: torch.Generator | None = None) -> torch.Tensor:
    """Θ_MA(z_k) = mean of z_k over all examples and positions."""
    return stats.total / stats.positions


def std_activation(conv: nn.Conv2d, stats: MapStats, generator: torch.Generator | None = None) -> torch.Tensor:
    """Θ_std(z_k) = standard deviation (population) of z_k over all examples and positions."""
    mean = stats.total / stats.positions
    return (stats.total_sq / stats.positions - mean.square()).clamp_min(0).sqrt()


def apoz(conv: nn.Conv2d, stats: MapStats, generator: torch.Generator | None = None) -> torch.Tensor:
    """1 − APoZ (Hu et al. 2016): APoZ is the fraction of zeros in z_k; more zeros = less important."""
    return 1.0 - stats.zeros / stats.positions


def l1(conv: nn.Conv2d, stats: MapStats | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Σ|W_k|: L1 norm of filter k's weights, shape (C_out, C_in, kh, kw) -> (C_out,)."""
    return conv.weight.detach().abs().sum(dim=(1, 2, 3))


def l2(conv: nn.Conv2d, stats: MapStats | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """sqrt(Σ W_k²): L2 norm of filter k's weights."""
    return conv.weight.detach().square().sum(dim=(1, 2, 3)).sqrt()


def random(conv: nn.Conv2d, stats: MapStats | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform scores in [0, 1), one per filter, from `generator`: the floor every criterion must beat.

    Never normalised per layer (`rank_all`): dividing by each layer's norm would favour wide layers,
    while pruning by raw uniform scores picks filters uniformly from the whole network.
    """
    return torch.rand(conv.out_channels, generator=generator, dtype=torch.float64)


Criterion = Callable[[nn.Conv2d, "MapStats | None", "torch.Generator | None"], torch.Tensor]

#: Every criterion by name: ``score(conv, stats, generator) -> (C,)``, higher = more important.
CRITERIA: dict[str, Criterion] = {
    "taylor": taylor_score,
    "mean_activation": mean_activation,
    "std_activation": std_activation,
    "apoz": apoz,
    "l1": l1,
    "l2": l2,
    "random": random,
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


def _accumulate(model, x, y, maps, stats, couplings, gradients: bool, loss_fn: Callable) -> None:
    """One batch: forward (hooks fill `maps`), back-propagate C to every map, add each map to its MapStats."""
    with torch.set_grad_enabled(gradients):
        # inputs that require grad give every z a graph, also under frozen layers
        out = model(x.detach().requires_grad_(gradients) if gradients else x)
        zs = [maps[n][0] for n in couplings]
        grads = torch.autograd.grad(loss_fn(out, y), zs, allow_unused=True) if gradients else [None] * len(zs)
    for (name, (z, version)), g in zip(maps.items(), grads):
        if z._version != version:
            raise RuntimeError(f"the map of {name} was changed in place after "
                               f"{couplings[name].capture}; criteria cannot read it")
        stats[name].add(z, torch.zeros_like(z) if gradients and g is None else g)
    maps.clear()


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
    if torch.is_inference_mode_enabled():
        raise RuntimeError("ranking needs gradients of the feature maps, but it was called under torch.inference_mode(); "
                           "call it outside (it leaves the model's weights and .grad untouched)")
    couplings = _capture_points(model)
    modules = dict(model.named_modules())
    device = model_device(model)
    maps: dict[str, tuple[torch.Tensor, int]] = {}
    stats = {name: MapStats() for name in couplings}

    def keep(name):
        def hook(module, inputs, output):
            maps[name] = (output, output._version)
        return hook

    hooks = [modules[c.capture].register_forward_hook(keep(n)) for n, c in couplings.items()]
    try:
        with mode(model, training=False):
            for i, (x, y) in enumerate(tqdm(batches, desc="ranking", disable=not progress, leave=False)):
                if max_batches is not None and i >= max_batches:
                    break
                _accumulate(model, x.to(device), y.to(device), maps, stats, couplings, gradients, loss_fn)
    finally:
        for h in hooks:
            h.remove()
    if not any(st.examples for st in stats.values()):
        raise ValueError("no data to rank with: the batches were empty (or max_batches=0); pass at least one batch "
                         "of (inputs, targets)")
    return stats


def check_scores(criterion: str, raw: Mapping[str, torch.Tensor]) -> None:
    """Non-finite scores are an error naming the layer; all-zero Taylor scores (a constant loss) a warning."""
    for name, scores in raw.items():
        if not torch.isfinite(scores).all():
            raise ValueError(f"{criterion} scores of {name} are not finite (NaN or inf): the inputs or the loss "
                             "hold NaN/inf; check the data (and the model's outputs) before ranking")
    if criterion == "taylor" and all(float(s.abs().max()) == 0.0 for s in raw.values()):
        warnings.warn("every Taylor score is 0: the loss does not change with any feature map (a constant loss, "
                      "or a loss that ignores the model's outputs); the ranking is arbitrary", RuntimeWarning, stacklevel=3)


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
        generator = torch.Generator().manual_seed(seed)
        raw = {n: CRITERIA[criterion](modules[n], s, generator).detach().float().cpu() for n, s in stats.items()}
        check_scores(criterion, raw)
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
