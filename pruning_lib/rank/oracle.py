"""The oracle and Table 1: how well does a cheap criterion predict the true loss change?

The **oracle** of filter k is |ΔC|, the change of the loss C when filter k alone is removed (its channel set
to zero wherever the next layers read it, `masking.zeroed_where_read`, which is exactly what surgery does).  It costs one forward pass of the rest of
the network per filter, so it is a yardstick, never a way to prune.  Molchanov et al. 2017, Table 1,
compare criteria with it by Spearman's rank correlation ρ; `spearman_table` computes that table and
`compare_with_paper` puts it beside the paper's numbers.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import pandas as pd
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from ..graph.groups import channel_groups
from ..graph.trace import trace
from ..runtime import mode, model_device
from .criteria import CRITERIA, Batches, Scores, normalize_per_layer
from .masking import zeroed_where_read

__all__ = ["PAPER_ALL_LAYERS_L2", "PAPER_ALL_LAYERS_RAW", "PAPER_PER_LAYER", "compare_with_paper", "oracle",
           "spearman", "spearman_table"]

# Molchanov et al. 2017, Table 1: Spearman ρ of each criterion against the oracle (oracle-abs, |ΔC|) for the
# convolutional feature maps of VGG-16 fine-tuned on Birds-200.  Source: arXiv:1611.06440v1, Sec. 3.2, Table 1,
# whose columns are, in this order, Mutual Information, Weight, Activation Mean, Activation S.d., Taylor, and whose
# rows are "Per layer", "All layers" and "All layers (w/ ℓ2 norm)":
#
#                               MI     Weight  Mean   S.d.   Taylor
#   Per layer                   0.28   0.27    0.56   0.57   0.73
#   All layers                  0.35   0.34    0.35   0.30   0.14
#   All layers (w/ ℓ2 norm)     0.47   0.33    0.64   0.66   0.73
#
# (The text below it: "Activation, Activation-standard and Taylor do not scale across layers without
# normalization", hence Taylor's 0.14 without it; and "we also evaluated random ranking and observed 0.0
# correlation coefficient across all layers".)  Keys are our criterion names.  "l2" stands for the paper's
# "Weight" criterion, Θ_MW = 1/I Σ w² (Sec. 2.2): within a layer it ranks filters exactly as our L2 norm does; across
# layers the two differ by each layer's 1/I and a square, so only the per-layer number compares exactly.  Mutual
# information is not implemented here (its row is NaN in our columns).  The table has no APoZ column (APoZ is Hu et
# al. 2016): our "apoz" rows, and the "..._at_readers" rows, are compared with our oracle only (NaN in the paper's
# columns), in notebook 02's table and in its one-shot sweep.
PAPER_ALL_LAYERS_L2 = {"taylor": 0.73, "std_activation": 0.66, "mean_activation": 0.64,
                       "mutual_information": 0.47, "l2": 0.33, "random": 0.0}

PAPER_PER_LAYER = {"taylor": 0.73, "std_activation": 0.57, "mean_activation": 0.56,
                   "mutual_information": 0.28, "l2": 0.27}

PAPER_ALL_LAYERS_RAW = {"taylor": 0.14, "std_activation": 0.30, "mean_activation": 0.35,
                        "mutual_information": 0.35, "l2": 0.34}


def compare_with_paper(table: pd.DataFrame) -> pd.DataFrame:
    """Our Spearman summary (`spearman_table`) beside the paper's Table 1 numbers (VGG-16 on Birds-200).

    Rows: our criteria (every one in `table`: the activation criteria on the maps, as the paper defines them, and
    at the readers, under their own names) plus the paper's mutual information (not implemented: NaN in our
    columns).  The paper's numbers stand beside the criteria it defines; APoZ and the "..._at_readers" forms are not
    in its table (NaN there).  Columns: ``ours: all layers (L2)``, ``paper: all layers (L2)``,
    ``ours: per layer (mean)``, ``paper: per layer``, ``ours: all layers (raw)``, ``paper: all layers (raw)``.
    """
    paper = [*PAPER_ALL_LAYERS_L2, *PAPER_PER_LAYER, *PAPER_ALL_LAYERS_RAW]
    rows = list(table.index) + [c for c in dict.fromkeys(paper) if c not in table.index]
    nan = float("nan")

    def ours(col: str, c: str) -> float:
        return float(table.loc[c, col]) if c in table.index else nan

    return pd.DataFrame({
        "ours: all layers (L2)": [ours("all_layers_l2", c) for c in rows],
        "paper: all layers (L2)": [PAPER_ALL_LAYERS_L2.get(c, nan) for c in rows],
        "ours: per layer (mean)": [ours("per_layer_mean", c) for c in rows],
        "paper: per layer": [PAPER_PER_LAYER.get(c, nan) for c in rows],
        "ours: all layers (raw)": [ours("all_layers_raw", c) for c in rows],
        "paper: all layers (raw)": [PAPER_ALL_LAYERS_RAW.get(c, nan) for c in rows],
    }, index=pd.Index(rows, name="criterion"))


# ---------------------------------------------------------------- the oracle
def _loss_from(gm: fx.GraphModule, x, y, env: dict, loss_fn: Callable) -> float:
    """Run only the part of the graph not already in `env` and return the mean loss."""
    return float(loss_fn(fx.Interpreter(gm).run(x, initial_env=dict(env)), y))   # run() fills and empties the env it gets


def _sample(groups, names, sample_per_layer: int | None, seed: int) -> dict[str, list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return {n: (list(range(groups[n].size)) if sample_per_layer is None or sample_per_layer >= groups[n].size
                else sorted(torch.randperm(groups[n].size, generator=generator)[:sample_per_layer].tolist()))
            for n in names}


def oracle(
    model: nn.Module,
    batches: Batches,
    *,
    loss_fn: Callable = F.cross_entropy,
    max_batches: int | None = None,
    sample_per_layer: int | None = None,
    only: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> Scores:
    """The oracle: |ΔC| when channel k of a group alone is removed (zeroed wherever a reader reads it), per channel.

    That is exactly what removing it does (`surgery`).  C is the mean of ``loss_fn`` over the given examples,
    in eval mode.  It costs one forward pass of the network from the group's first reader on, for every
    channel: use it on small networks and a few batches, on `only` a few groups, or with `sample_per_layer`:
    only that many channels of each group (drawn with `seed`) are measured, the others are NaN (`spearman`
    skips them).  Returns raw (unnormalised) |ΔC| per group.
    """
    groups = channel_groups(model)
    names = [g.name for g in groups.values() if not g.refused and (only is None or g.name in only)]
    data = [b for i, b in enumerate(batches) if max_batches is None or i < max_batches]
    device = model_device(model)
    measured = _sample(groups, names, sample_per_layer, seed)
    deltas = {n: torch.zeros(groups[n].size, dtype=torch.float64) for n in names}
    removed: dict[str, list[int]] = {}            # the plan the readers see now: {group: [channel]}, or nothing
    total = sum(len(y) for _, y in data)
    bar = tqdm(total=sum(map(len, measured.values())) * len(data), desc="oracle", disable=not progress, leave=False)
    try:
        with mode(model, training=False), torch.no_grad(), zeroed_where_read(model, removed, groups):
            gm = fx.GraphModule(model, trace(model))
            nodes = list(gm.graph.nodes)
            first_reader = {n: min(i for i, nd in enumerate(nodes) if nd.op == "call_module" and nd.target in
                                   set(groups[n].readers)) for n in names}
            for x, y in data:
                x, y = x.to(device), y.to(device)
                removed.clear()                       # the unpruned network first
                interp = fx.Interpreter(gm, garbage_collect_values=False)
                base = float(loss_fn(interp.run(x), y))
                for name in names:
                    prefix = {nd: interp.env[nd] for nd in nodes[:first_reader[name]]}
                    for k in measured[name]:          # channel k removed: zero where every reader reads it
                        removed.clear()
                        removed[name] = [k]
                        deltas[name][k] += (_loss_from(gm, x, y, prefix, loss_fn) - base) * len(y)
                        bar.update()
    finally:
        removed.clear()
        bar.close()
    result = {n: (d / total).abs().float() for n, d in deltas.items()}
    for n, r in result.items():
        unmeasured = torch.ones(groups[n].size, dtype=torch.bool)
        unmeasured[measured[n]] = False
        r[unmeasured] = float("nan")
    return result


# ---------------------------------------------------------------- Table 1
def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-D score vectors (ties get average ranks); pairs with a NaN
    (filters a sampled oracle did not measure) are left out."""
    if len(a) != len(b):
        raise ValueError(f"score vectors differ in length: {len(a)} vs {len(b)}")
    keep = ~(torch.isnan(a.double()) | torch.isnan(b.double()))
    rho = spearmanr(a.double()[keep].numpy(), b.double()[keep].numpy()).statistic
    return float(rho)


def spearman_table(all_scores: Mapping[str, Mapping[str, torch.Tensor]], oracle_scores: Mapping[str, torch.Tensor],
                   *, keep_raw: Sequence[str] | None = None) -> pd.DataFrame:
    """The paper's Table 1: Spearman ρ of each criterion against the oracle.

    Args:
        all_scores: ``{criterion: {conv: raw (unnormalised) scores}}``.
        oracle_scores: ``{conv: |ΔC|}`` from `oracle`.

    Returns:
        DataFrame, one row per criterion: a column per layer, ``per_layer_mean``,
        ``all_layers_raw`` (scores pooled across layers as they are) and ``all_layers_l2``
        (each layer L2-normalised first, as pruning compares them; the criteria in `keep_raw` stay raw
        there too, as they are pruned with: random scores normalised per layer would favour wide layers).
        By default `keep_raw` is every criterion whose `criteria.CRITERIA` entry is not normalised (random).
        The oracle is compared raw: |ΔC| is comparable across layers.
    """
    if keep_raw is None:
        keep_raw = [c for c in all_scores if c in CRITERIA and not CRITERIA[c].normalize]
    layers = list(oracle_scores)
    pooled_oracle = torch.cat([oracle_scores[n] for n in layers])
    rows = {}
    for criterion, scores in all_scores.items():
        per_layer = {n: spearman(scores[n], oracle_scores[n]) for n in layers}
        l2_scores = normalize_per_layer({n: scores[n] for n in layers}, None if criterion in keep_raw else "l2")
        rows[criterion] = {
            **per_layer,
            "per_layer_mean": sum(per_layer.values()) / len(layers),
            "all_layers_raw": spearman(torch.cat([scores[n] for n in layers]), pooled_oracle),
            "all_layers_l2": spearman(torch.cat([l2_scores[n] for n in layers]), pooled_oracle),
        }
    return pd.DataFrame.from_dict(rows, orient="index")
