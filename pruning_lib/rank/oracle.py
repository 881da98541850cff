"""The oracle and Table 1: how well does a cheap criterion predict the true loss change?

The **oracle** of filter k is |ΔC|, the change of the loss C when filter k alone is removed (its channel set
to zero wherever the next layers read it, which is exactly what surgery does).  It costs one forward pass of the rest of
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
from .criteria import Batches, Scores, normalize_per_layer

__all__ = ["PAPER_ALL_LAYERS_L2", "PAPER_ALL_LAYERS_RAW", "PAPER_PER_LAYER", "compare_with_paper", "oracle",
           "spearman", "spearman_table"]

# Molchanov et al. 2017, Table 1 (VGG16 fine-tuned on Birds-200): Spearman ρ against the oracle.
# Keys are our criterion names; "l2" stands for the paper's "weight" criterion (mean squared weight,
# which ranks a layer's filters exactly as our L2 norm does).  Mutual information is not implemented here.
PAPER_ALL_LAYERS_L2 = {"taylor": 0.73, "std_activation": 0.66, "mean_activation": 0.64,
                       "mutual_information": 0.47, "l2": 0.33, "random": 0.0}

PAPER_PER_LAYER = {"taylor": 0.73, "l2": 0.27}

PAPER_ALL_LAYERS_RAW = {"taylor": 0.14}


def compare_with_paper(table: pd.DataFrame) -> pd.DataFrame:
    """Our Spearman summary (`criteria.spearman_table`) beside the paper's Table 1 numbers.

    Rows: our criteria plus the paper's mutual information (not implemented: NaN in our columns).
    Columns: ``ours: all layers (L2)``, ``paper: all layers (L2)``, ``ours: per layer (mean)``,
    ``paper: per layer``, ``ours: all layers (raw)``, ``paper: all layers (raw)``; NaN = not reported.
    """
    rows = list(table.index) + [c for c in PAPER_ALL_LAYERS_L2 if c not in table.index]
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
    device, modules = model_device(model), dict(model.named_modules())
    measured = _sample(groups, names, sample_per_layer, seed)
    deltas = {n: torch.zeros(groups[n].size, dtype=torch.float64) for n in names}
    zero: dict[str, list[int]] = {}              # reader -> the input channels (column blocks) set to zero now

    def masking(reader):
        def pre_hook(module, args):
            if not zero.get(reader):
                return None
            x = args[0].clone()
            x[:, zero[reader]] = 0
            return (x, *args[1:])
        return pre_hook

    readers = {m.module for n in names for m in groups[n].members if m.role == "in"}
    hooks = [modules[r].register_forward_pre_hook(masking(r)) for r in readers]
    total = sum(len(y) for _, y in data)
    bar = tqdm(total=sum(map(len, measured.values())) * len(data), desc="oracle", disable=not progress, leave=False)
    try:
        with mode(model, training=False), torch.no_grad():
            gm = fx.GraphModule(model, trace(model))
            nodes = list(gm.graph.nodes)
            first_reader = {n: min(i for i, nd in enumerate(nodes) if nd.op == "call_module" and nd.target in
                                   {m.module for m in groups[n].members if m.role == "in"}) for n in names}
            for x, y in data:
                x, y = x.to(device), y.to(device)
                zero.clear()                          # the unpruned network first
                interp = fx.Interpreter(gm, garbage_collect_values=False)
                base = float(loss_fn(interp.run(x), y))
                for name in names:
                    prefix = {nd: interp.env[nd] for nd in nodes[:first_reader[name]]}
                    for k in measured[name]:          # channel k removed: zero where every reader reads it
                        zero.clear()
                        for m in groups[name].members:
                            if m.role == "in":
                                zero.setdefault(m.module, []).extend(range((m.offset + k) * m.span, (m.offset + k + 1) * m.span))
                        deltas[name][k] += (_loss_from(gm, x, y, prefix, loss_fn) - base) * len(y)
                        bar.update()
    finally:
        zero.clear()
        for h in hooks:
            h.remove()
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
                   *, keep_raw: tuple[str, ...] = ("random",)) -> pd.DataFrame:
    """The paper's Table 1: Spearman ρ of each criterion against the oracle.

    Args:
        all_scores: ``{criterion: {conv: raw (unnormalised) scores}}``.
        oracle_scores: ``{conv: |ΔC|}`` from `oracle`.

    Returns:
        DataFrame, one row per criterion: a column per layer, ``per_layer_mean``,
        ``all_layers_raw`` (scores pooled across layers as they are) and ``all_layers_l2``
        (each layer L2-normalised first, as pruning compares them; the criteria in `keep_raw` stay raw
        there too, as they are pruned with: random scores normalised per layer would favour wide layers).
        The oracle is compared raw: |ΔC| is comparable across layers.
    """
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
