"""Notebook 05's pieces: the channel groups of a ResNet as a table, what a plan takes from each kind of group,
the naive surgery it refuses, and ``reports/resnet.json`` (the dense and pruned figures and the issue's targets).

A ResNet has two kinds of groups (`groups.channel_groups`): a **residual stream** (several convs write into
the same sum: a stage's stem or shortcut conv and every block's last conv) and a group **inside a block**
(one conv, read by the next conv of the block only).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import math

import pandas as pd
from torch import nn

from ..graph.groups import ChannelGroup
from ..rank.masking import masked
from . import arms
from .lessons import MET, against_limit
from .profiles import Profile
from .reports import read_json, report_path, write_json

__all__ = ["MODELS", "SCHEDULES", "TARGETS", "block_last_conv", "check_resnet_targets", "cost_by_kind", "group_kind",
           "group_table", "kept_by_kind", "mask_group_channels", "pruning_run", "read_resnet_report", "resnet_report",
           "schedule_changes", "time_shortfall", "write_resnet_json"]

#: The quick profile's targets for the pruned ResNet, measured in notebook 05's own run.  How well its FLOPs
#: predict its time (speedup / FLOPs ratio) is reported beside them, as a number of its own, not a target.
TARGETS = {"min_flops_ratio": 2.5, "max_points_lost": 1.0}

#: Notebook 05's ResNet per profile (the full profile: torchvision's ImageNet ResNet-18).
MODELS = {"quick": "small_resnet", "full": "resnet18"}

#: The ResNet's schedule: changes to the profile's, chosen on validation accuracy by
#: ``benchmarks/resnet_schedules.py`` (the README has its table); a profile not listed keeps its own schedule.
SCHEDULES = {"quick": {"fraction_per_iteration": 0.1, "flops_lambda": 0.0, "target_fraction": 0.6}}


def schedule_changes(profile: Profile) -> dict[str, Any]:
    """The changes `SCHEDULES` makes to `profile`'s schedule for the ResNet (a copy: edit it freely)."""
    return dict(SCHEDULES.get(profile.name, {}))


def pruning_run(baseline: nn.Module, profile: Profile, criterion: str, train_loader, val_batches, *,
                callbacks=(), **changes):
    """Notebook 05's Prune–Train–Repeat run of the ResNet: `arms.checkpointed_run` with `changes` (notebook 05
    passes `schedule_changes`), keeping the first network with at least ``TARGETS["min_flops_ratio"]`` fewer
    FLOPs (no parameter budget).  ``python -m pruning_lib.course.loops --notebook 05`` makes the same calls."""
    return arms.checkpointed_run(baseline, profile, criterion, train_loader, val_batches, min_params_ratio=1.0,
                                 min_flops_ratio=TARGETS["min_flops_ratio"], callbacks=callbacks, **changes)


def group_kind(group: ChannelGroup) -> str:
    """``"residual stream"`` when several convs write the group's channels (into a sum), else ``"inside a block"``."""
    return "residual stream" if len(group.producers) > 1 else "inside a block"


def group_table(groups: Mapping[str, ChannelGroup]) -> pd.DataFrame:
    """One row per prunable group: its kind, channels, the convs that write it and how many layers read it."""
    rows = [{"group": g.name, "kind": group_kind(g), "channels": g.size, "written by": ", ".join(g.producers),
             "readers": len(g.readers)} for g in groups.values() if not g.refused]
    return pd.DataFrame(rows).set_index("group")


def kept_by_kind(groups: Mapping[str, ChannelGroup], widths: Mapping[str, int]) -> pd.DataFrame:
    """Channels of each kind of group in the unpruned network (`groups`) and how many `widths` keeps."""
    rows = [{"kind": group_kind(g), "channels": g.size, "kept": widths[g.name]} for g in groups.values() if not g.refused]
    table = pd.DataFrame(rows).groupby("kind")[["channels", "kept"]].sum()
    table["% kept"] = (100 * table["kept"] / table["channels"]).round(1)
    return table


def cost_by_kind(groups: Mapping[str, ChannelGroup], cost: Mapping[str, float]) -> pd.Series:
    """The mean of `cost` (e.g. `plan.flops_per_channel`: the GFLOPs one channel costs) over each kind of group."""
    rows = pd.DataFrame([{"kind": group_kind(groups[name]), "cost": value} for name, value in cost.items()])
    return rows.groupby("kind")["cost"].mean()


def block_last_conv(model: nn.Module, groups: Mapping[str, ChannelGroup]) -> tuple[str, str]:
    """``(conv, its BatchNorm)``: the last conv of the first residual block, which writes into the residual stream."""
    modules = dict(model.named_modules())
    order = list(modules)
    stream = next(g for g in groups.values() if group_kind(g) == "residual stream" and not g.refused)
    conv = stream.producers[1]                                     # [0] is the stem (or the shortcut conv)
    bns = [m.module for m in stream.members if isinstance(modules[m.module], nn.BatchNorm2d)
           and order.index(m.module) > order.index(conv)]
    return conv, min(bns, key=order.index)


def mask_group_channels(model: nn.Module, groups: Mapping[str, ChannelGroup], plan: Mapping[str, list[int]]) -> nn.Module:
    """`model` (unchanged, not copied) wrapped so that every call zeroes the planned channels of each group wherever
    a reader reads them (`rank.masking.masked`), which is what removing them computes."""
    return masked(model, plan, groups)


def check_resnet_targets(dense_accuracy: float, pruned_accuracy: float, *, flops_ratio: float,
                         targets: Mapping[str, float] = TARGETS, noise_points: float = 0.0) -> dict[str, dict[str, Any]]:
    """Each target, measured: ``{name: {"required", "measured", "noise", "outcome", "met"}}`` (accuracies as
    fractions).  `noise_points` is the noise of the points lost (`lessons.noise_points` of the two networks on the
    same test images: the test set's noise); the FLOPs are counted, without noise.  ``outcome`` has three values
    (`lessons.against_limit`: "met", "missed", "within the noise"); ``met`` is True only when it is "met"."""
    lost = 100 * (dense_accuracy - pruned_accuracy)
    flops = against_limit(flops_ratio, 0.0, targets["min_flops_ratio"], at_least=True)
    kept = against_limit(lost, noise_points, targets["max_points_lost"], at_least=False)
    return {
        "flops_ratio": {"required": f">= {targets['min_flops_ratio']:g}", "measured": flops_ratio, "noise": 0.0,
                        "outcome": flops, "met": flops == MET},
        "points_lost": {"required": f"<= {targets['max_points_lost']:g}", "measured": lost,
                        "noise": float(noise_points), "outcome": kept, "met": kept == MET},
    }


def time_shortfall(gap: pd.DataFrame, *, reference: str = "dense", pruned: str = "taylor") -> dict[str, float]:
    """Why the speedup falls short of the FLOPs ratio, from `measure.explain_gap`'s table (layers timed one by one).

    Returns ``flops_ratio`` (FLOPs of `reference` over `pruned`), ``conv_speedup`` (the time of the layers with FLOPs,
    convs and Linear: `reference` over `pruned`), ``timed_speedup`` (all layers), ``gflop_per_s`` of both,
    ``other_share`` of both (the time of the layers without FLOPs) and ``conv_part``: the share of the shortfall,
    on a log scale, that the layers with FLOPs explain, log(flops_ratio / conv_speedup) / log(flops_ratio /
    timed_speedup) (NaN when there is no shortfall); the layers without FLOPs explain the rest.
    """
    d, p = gap.loc[reference], gap.loc[pruned]
    flops, conv, timed = d["gflops"] / p["gflops"], d["flop_layers_ms"] / p["flop_layers_ms"], d["total_ms"] / p["total_ms"]
    part = math.log(flops / conv) / math.log(flops / timed) if flops > timed else math.nan
    return {"flops_ratio": float(flops), "conv_speedup": float(conv), "timed_speedup": float(timed),
            "gflop_per_s_dense": float(d["gflop_per_s"]), "gflop_per_s_pruned": float(p["gflop_per_s"]),
            "other_share_dense": float(d["other_share"]), "other_share_pruned": float(p["other_share"]),
            "conv_part": float(part)}


def resnet_report(profile: str, model: str, table: pd.DataFrame, *, checks: Mapping[str, Mapping[str, Any]],
                  groups: Mapping[str, Any], measurement: Mapping[str, Any], reference: str = "dense",
                  pruned: str = "taylor", time: Mapping[str, float] | None = None) -> dict[str, Any]:
    """``reports/resnet.json``: the dense and pruned networks (rows of one (form, batch) slice of
    `measure.side_by_side`), each target with its outcome, the channels kept per kind of group and, with `time`
    (`time_shortfall`), where the speedup falls short of the FLOPs ratio."""
    def entry(name: str) -> dict[str, Any]:
        r = table.loc[name]
        return {"accuracy": float(r["accuracy"]), "mflops": 1e3 * float(r["gflops"]), "params": int(r["params"]),
                "size_mb": float(r["size_mb"]), "latency_ms": float(r["latency_ms"]), "speedup": float(r["speedup"]),
                "speedup_per_flops": float(r["speedup"]) * float(r["gflops"]) / float(table.loc[reference, "gflops"])}

    return {"profile": profile, "model": model, "dense": entry(reference),
            "pruned": {name: entry(name) for name in table.index if name != reference},
            "headline": pruned, "targets": {k: dict(v) for k, v in checks.items()},
            "all_met": all(bool(v["met"]) for v in checks.values()), "groups": dict(groups),
            "measurement": dict(measurement), **({"time": dict(time)} if time is not None else {})}


def write_resnet_json(report: Mapping[str, Any], path: str | Path | None = None) -> Path:
    """Write ``reports/resnet.json`` (atomic, plain JSON)."""
    if not {"dense", "pruned", "targets", "all_met"} <= set(report):
        raise ValueError(f"not a ResNet report: keys {sorted(report)}")
    return write_json(report, report_path(path, "resnet.json"))


def read_resnet_report(path: str | Path | None = None) -> dict[str, Any]:
    return read_json(report_path(path, "resnet.json"))
