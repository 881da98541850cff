"""Preflight: check everything a profile's run needs before any long work, and estimate its time.

    python -m pruning_lib.course.preflight [--profile full] [--overrides "input_size=64"]

Checks the data source (found; readable images per class; corrupt ones counted), the pretrained weights
(found, or where to get them), the device (CUDA, MPS or CPU, and its memory), the free disk space for
checkpoints, and estimates the run's time **from a few training steps timed on this device** (not from a
nominal FLOP/s figure).  Exits with status 1 and the list of what is missing when something is.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import data
from ..runtime import num_threads, pick_device
from ..models.pretrained import hub_path
from ..models.resnets import TORCHVISION_RESNETS
from ..models.vgg16 import VGG16_WEIGHTS
from .source import SOURCE_CHECKPOINTS
from . import experiment
from .datasets import TARGET_CLASSES
from .paths import checkpoints_dir, shown
from .profiles import Profile, get_profile

__all__ = ["Check", "Report", "estimate_seconds", "run_checks"]


@dataclass
class Check:
    """One line of the report: what was checked, whether it is fine, and what to do if not."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    seconds_per_step: float | None = None
    estimate_s: float | None = None

    @property
    def missing(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def lines(self) -> list[str]:
        out = [f"[{'ok' if c.ok else 'MISSING'}] {c.name}: {c.detail}" + (f"\n      fix: {c.fix}" if c.fix and not c.ok else "")
               for c in self.checks]
        if self.estimate_s is not None:
            out.append(f"estimate: {self.seconds_per_step:.3f} s per training step of the dense network, measured here; "
                       f"at most {self.estimate_s / 60:.0f} min of training for the notebooks (every step budget used in "
                       "full, each at the dense network's cost: pruned networks are cheaper), plus evaluation")
        return out


def _data_check(profile: Profile) -> Check:
    if profile.dataset == "fashion-mnist":
        try:
            pool = data.fashion_mnist("train", TARGET_CLASSES)
        except FileNotFoundError as err:
            return Check("data", False, str(err).split(". ")[0], data.FASHION_REGENERATE)
        counts = torch.bincount(pool.tensors[1]).tolist()
        return Check("data", True, f"embedded Fashion-MNIST, {counts} training images per class")
    kaggle = os.environ.get("PRUNING_KAGGLE_DIR")
    if kaggle:
        import warnings

        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                parts = {s: data.kaggle_dogs_vs_cats(kaggle, s, val_fraction=0.15, test_fraction=0.15)
                         for s in ("train", "val", "test")}
        except (OSError, ValueError) as err:
            return Check("data", False, f"PRUNING_KAGGLE_DIR={kaggle}: {err}",
                         "point PRUNING_KAGGLE_DIR at the folder holding Kaggle's train/ (cat.0.jpg, dog.0.jpg, ...)")
        per_class = [sum(ds.targets.count(c) for ds in parts.values()) for c in (0, 1)]
        skipped = sum(len(ds.skipped) for ds in parts.values())
        del caught
        return Check("data", True, f"Kaggle folder {kaggle}: {per_class[0]} cat and {per_class[1]} dog images readable, "
                                   f"{skipped} unreadable skipped; splits " +
                     ", ".join(f"{s} {len(ds)}" for s, ds in parts.items()))
    root = data.full_data_dir() / "oxford-iiit-pet"
    if (root / "images").is_dir() and (root / "annotations").is_dir():
        return Check("data", True, f"Oxford-IIIT Pet in {root}")
    download = os.environ.get("PRUNING_DOWNLOAD", "0") == "1"
    return Check("data", download, f"Oxford-IIIT Pet is not in {root}" + ("; PRUNING_DOWNLOAD=1: it will be downloaded"
                                                                         if download else ""),
                 f"run once with PRUNING_DOWNLOAD=1 on a machine with internet (about 800 MB from {data.PETS_URL}), "
                 "or set PRUNING_KAGGLE_DIR to a Kaggle Dogs vs Cats folder")


def _weights_check(profile: Profile) -> Check:
    if profile.model in SOURCE_CHECKPOINTS:          # the quick profile's own source networks
        path = SOURCE_CHECKPOINTS[profile.model]
        ok = path.is_file()
        return Check("weights", ok, f"source network {path.name}" + ("" if ok else " missing"),
                     f"python -m pruning_lib.course.source --arch {profile.model} "
                     "(needs apt-get install dataset-fashion-mnist)")
    enum = TORCHVISION_RESNETS.get(profile.model, VGG16_WEIGHTS)
    name, variable = profile.model.upper(), experiment.weights_variable(profile.model)
    local = os.environ.get(variable)
    if local:
        ok = Path(local).expanduser().is_file()
        return Check("weights", ok, f"{variable}={local}" + ("" if ok else " does not exist"),
                     f"download {enum.url} and point {variable} at the file")
    cached = hub_path(enum)
    if cached.is_file():
        return Check("weights", True, f"ImageNet {name} weights in torch hub's cache ({cached})")
    return Check("weights", False, f"the ImageNet {name} weights are not in torch hub's cache ({cached})",
                 f"with internet they download on first use; offline, download {enum.url} and put it at {cached} "
                 f"or set {variable} to its path")


def _device_check() -> tuple[Check, torch.device]:
    device = pick_device()
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info()
        return Check("device", True, f"CUDA: {torch.cuda.get_device_name(0)}, {free / 1e9:.1f} of {total / 1e9:.1f} GB free"), device
    if device.type == "mps":
        return Check("device", True, "Apple MPS"), device
    return Check("device", True, f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"), device


def _disk_check(profile: Profile) -> Check:
    folder = checkpoints_dir()
    free = shutil.disk_usage(folder).free
    model = experiment.architecture(profile)
    need = 6 * sum(p.numel() * p.element_size() for p in model.state_dict().values())    # baseline + a few pruned
    return Check("disk", free > need, f"{free / 1e9:.1f} GB free in {shown(folder)} (checkpoints need about {need / 1e9:.2f} GB)",
                 "free some space or set PRUNING_CHECKPOINT_DIR to a larger disk")


def run_steps(profile: Profile) -> int:
    """Training steps a profile's notebooks run, at most: baseline, Prune–Train–Repeat (four runs), the comparisons."""
    filters = sum(m.out_channels for m in experiment.architecture(profile).modules() if isinstance(m, torch.nn.Conv2d))
    removed, iterations = 0, 0
    while removed < profile.target_fraction * filters and iterations < 1000:
        k = (profile.filters_per_iteration if profile.fraction_per_iteration is None
             else max(1, round(profile.fraction_per_iteration * (filters - removed))))
        removed, iterations = removed + k, iterations + 1
    loop = iterations * profile.finetune_steps
    baseline = profile.baseline_head_steps + profile.baseline_max_steps
    return baseline + 4 * loop + loop + 2 * profile.final_max_steps + 4 * (loop + profile.final_max_steps)


def estimate_seconds(profile: Profile, device: torch.device, steps: int = 3) -> float:
    """Seconds per training step of the profile's dense network on `device`, measured (after one warm-up step)."""
    model = experiment.architecture(profile).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(profile.batch_size, *profile.input_shape, device=device)
    y = torch.randint(0, 2, (profile.batch_size,), device=device)
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def run_checks(profile: Profile, *, time_steps: bool = True) -> Report:
    """Every check for `profile`; with `time_steps`, the time estimate too."""
    report = Report([_data_check(profile), _weights_check(profile)])
    if profile.name == "full" and profile.model == "vgg16":         # notebook 05 prunes ResNet-18 in the full profile
        report.checks.append(_weights_check(dataclasses.replace(profile, model="resnet18")))
    device_check, device = _device_check()
    report.checks += [device_check, _disk_check(profile)]
    if time_steps:
        with num_threads(profile.threads):
            report.seconds_per_step = estimate_seconds(profile, device)
        report.estimate_s = report.seconds_per_step * run_steps(profile)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=None, help="quick (default, or $PRUNING_PROFILE) or full")
    parser.add_argument("--overrides", default="", help="profile fields for this run, as in PRUNING_OVERRIDES")
    parser.add_argument("--no-timing", action="store_true", help="skip the timed training steps")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile, args.overrides)
    report = run_checks(profile, time_steps=not args.no_timing)
    print(f"preflight, profile {profile.name!r}:")
    print("\n".join(report.lines()))
    if report.missing:
        print(f"missing: {', '.join(c.name for c in report.missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
