"""Profiles: **quick** (default: offline, CPU, minutes) and **full** (the post's real experiment, GPU).

Choose with the ``PRUNING_PROFILE`` environment variable or a notebook's ``parameters`` cell, and change
any field for one run without editing this file: ``PRUNING_OVERRIDES="finetune_steps=20,seed=3"`` or the
notebooks' ``overrides`` parameter (checked against the fields' names and types).

One vocabulary: the fields a Prune–Train–Repeat run needs have exactly the names of
`iterative.PruningSchedule`'s fields (``finetune_steps``, ``lr``, ``multiple_of``, ...), so the
profile, the schedule, the checkpoints' metadata and the reports all say the same thing.  The
baseline's own settings are prefixed ``baseline_``.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import asdict, dataclass, fields

__all__ = ["FULL", "PROFILES", "QUICK", "Profile", "SCHEDULE_FIELDS", "apply_overrides", "get_profile", "parse_overrides"]

#: The profile fields that `experiment.schedule` passes to `iterative.PruningSchedule` under the same names.
SCHEDULE_FIELDS = ("filters_per_iteration", "fraction_per_iteration", "finetune_steps", "lr", "lr_schedule",
                   "rank_batches", "target_fraction", "flops_lambda", "max_fraction", "multiple_of", "distill",
                   "temperature", "seed")


@dataclass(frozen=True)
class Profile:
    """Every knob of one run of the course, in one place (print it in a notebook)."""

    name: str
    dataset: str                    # "fashion-mnist", "oxford-pets" or "kaggle"
    model: str                      # "small_vgg" or "small_resnet" (quick), "vgg16", "resnet18" or "resnet50" (full)
    input_shape: tuple[int, int, int]
    batch_size: int
    eval_batch: int                 # batch size of validation and test passes (no gradients: larger is faster)
    train_images: int | None        # target-task training images (None: all the data source has)
    val_images: int | None          # validation images (None: the data source's own split)
    threads: int | None             # torch threads for training (None: torch's default); fixed so runs repeat
    # fine-tuning the baseline (transfer learning)
    baseline_head_steps: int        # stage 1: features frozen, as in the post
    baseline_max_steps: int         # stage 2: all layers, at most this many steps ...
    patience: int                   # ... stopping when validation accuracy stops improving
    eval_every: int
    baseline_lr: float
    # ranking and Prune–Train–Repeat (the names of PruningSchedule's fields)
    rank_batches: int               # batches used to rank filters
    oracle_batches: int
    filters_per_iteration: int
    finetune_steps: int             # fine-tune steps after each pruning iteration
    lr: float                       # learning rate of those fine-tunes
    target_fraction: float          # fraction of all conv filters to remove
    flops_lambda: float             # the paper's FLOPs regularisation strength (0: off)
    multiple_of: int                # every pruned layer keeps a multiple of this many filters (CPU vector width)
    final_max_steps: int            # the final fine-tune of a pruned network: at most this many steps
    benchmark_batch: int            # batch size used for the speedup figure
    fraction_per_iteration: float | None = None   # remove this share of what is left instead of filters_per_iteration
    lr_schedule: str = "constant"   # or "cosine" within each fine-tune
    max_fraction: float | None = None             # per-layer cap on the share of a layer removed (None: no cap)
    oracle_sample: int | None = None  # the oracle measures this many filters per layer (None: all of them)
    distill: float = 0.0            # weight of the dense network's soft predictions when fine-tuning a pruned one
    temperature: float = 4.0        # the distillation temperature
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


QUICK = Profile(
    name="quick", dataset="fashion-mnist", model="small_vgg", input_shape=(1, 28, 28), batch_size=64,
    eval_batch=512, train_images=400, val_images=400, threads=1,
    baseline_head_steps=40, baseline_max_steps=600, patience=4, eval_every=20, baseline_lr=1e-3,
    rank_batches=4, oracle_batches=1, filters_per_iteration=48, fraction_per_iteration=0.2, finetune_steps=40,
    lr=5e-4, lr_schedule="cosine", target_fraction=0.8, flops_lambda=0.1, multiple_of=8, max_fraction=0.9,
    final_max_steps=600, benchmark_batch=64,
    distill=0.7,    # fine-tune with the dense network as teacher (both sides of every comparison); 03 also shows 0
)

FULL = Profile(
    name="full", dataset="oxford-pets", model="vgg16", input_shape=(3, 224, 224), batch_size=32,
    eval_batch=64, train_images=None, val_images=None, threads=None,
    baseline_head_steps=200, baseline_max_steps=1500, patience=4, eval_every=100, baseline_lr=1e-4,
    rank_batches=10, oracle_batches=2, filters_per_iteration=512, finetune_steps=300, lr=1e-4,
    target_fraction=0.6, flops_lambda=0.0, multiple_of=16, final_max_steps=1500, benchmark_batch=16,
    oracle_sample=64,   # 13 layers x 64 filters: a sampled oracle, as one pass per filter of VGG16 costs minutes
    distill=0.0,    # the post's recipe (plain fine-tuning); 0.7 distils from the dense VGG16 (slower steps)
)

PROFILES = {"quick": QUICK, "full": FULL}
assert set(SCHEDULE_FIELDS) <= {f.name for f in fields(Profile)}


def _parse_value(name: str, text: str, kind: typing.Any) -> typing.Any:
    """`text` as a value of the field's type (int, float, str, bool, None, a tuple of ints), or a ValueError."""
    args = typing.get_args(kind)
    if text.lower() == "none" and type(None) in args:
        return None
    kind = next((a for a in args if a is not type(None)), kind) if args and typing.get_origin(kind) is not tuple else kind
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if typing.get_origin(kind) is tuple:
            return tuple(int(v) for v in text.replace("x", " ").replace(",", " ").split())
        return str(text)
    except ValueError:
        raise ValueError(f"override {name}={text!r}: not a valid {getattr(kind, '__name__', kind)}") from None


def parse_overrides(text: str | None) -> dict[str, typing.Any]:
    """``"finetune_steps=20,input_size=112"`` -> ``{"finetune_steps": 20, "input_shape": (3, 112, 112)}``.

    Keys must be fields of `Profile` (or ``input_size``: the height and width of ``input_shape``); values
    are parsed as the field's type.  An empty string gives ``{}``.
    """
    hints = typing.get_type_hints(Profile)
    out: dict[str, typing.Any] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise ValueError(f"override {item!r} is not name=value (e.g. finetune_steps=20)")
        if name == "input_size":
            out["input_size"] = _parse_value(name, value, int)
            continue
        if name not in hints or name == "name":
            raise ValueError(f"{name!r} is not a profile field; fields: {sorted(h for h in hints if h != 'name')} "
                             "(and input_size)")
        out[name] = _parse_value(name, value, hints[name])
    return out


_MODELS = {"quick": ("small_vgg", "small_resnet"), "full": ("vgg16", "resnet18", "resnet50")}


def apply_overrides(profile: Profile, overrides: str | dict | None) -> Profile:
    """`profile` with the fields of `overrides` (a ``name=value,...`` string or a dict) changed; validated."""
    changes = parse_overrides(overrides) if isinstance(overrides, str) or overrides is None else dict(overrides)
    if "model" in changes and changes["model"] not in _MODELS.get(profile.name, sum(_MODELS.values(), ())):
        raise ValueError(f"model={changes['model']!r} is not a model of the {profile.name} profile; "
                         f"choose one of {list(_MODELS.get(profile.name, ()))}")
    size = changes.pop("input_size", None)
    if size is not None:
        if size < 32 and profile.model == "vgg16":
            raise ValueError(f"input_size={size}: VGG16 needs at least 32 pixels (five 2x2 poolings)")
        changes["input_shape"] = (profile.input_shape[0], size, size)
    return dataclasses.replace(profile, **changes) if changes else profile


def get_profile(name: str | None = None, overrides: str | dict | None = None) -> Profile:
    """The profile called `name` (else ``$PRUNING_PROFILE``, else quick), with ``$PRUNING_OVERRIDES`` and then
    `overrides` applied (`apply_overrides`)."""
    name = name or os.environ.get("PRUNING_PROFILE") or "quick"
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)} "
                         "(set PRUNING_PROFILE or the notebook's parameters cell)")
    profile = apply_overrides(PROFILES[name], os.environ.get("PRUNING_OVERRIDES"))
    return apply_overrides(profile, overrides)


def changed_fields(profile: Profile, besides: typing.Iterable[str] = ()) -> str:
    """The fields in which `profile` differs from the profile of its name, as ``name=value,...``: what this run
    changed, whether through ``$PRUNING_OVERRIDES`` or a notebook's `overrides` parameter ("" when nothing).
    `besides`: fields the caller set itself and prints apart (notebook 05's model)."""
    base = dataclasses.asdict(PROFILES.get(profile.name, profile))
    return ",".join(f"{k}={v}" for k, v in dataclasses.asdict(profile).items() if base.get(k) != v and k not in besides)
