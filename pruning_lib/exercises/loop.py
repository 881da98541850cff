"""Checker for notebook 03's Prune–Train–Repeat exercise: the loop, written from the library's pieces.

The student's loop runs beside `iterative.prune_train_repeat` on a tiny model (the same schedule) and must give the
same history, iteration by iteration: the widths after each cut, the validation accuracy right after it and after
the fine-tune.  When it differs, the checker names what the student did instead where it can tell: a typical first
cut (raw scores, every batch ranked, notebook 03's own settings `P`), ranking only once, no fine-tuning, a cosine
learning rate.  The loop may use the pieces notebook 03's ten lines use (`PIECES`), never a whole loop.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import torch
from torch import nn

from ..course.profiles import QUICK
from ..graph.groups import group_widths
from ..plan import flops_per_channel, layer_floors, plan_from_scores, regularised_scores
from ..rank.criteria import rank_filters
from ..recover.iterative import PruningSchedule, prune_train_repeat
from ._guard import without_library
from ._verdict import Wrong, close, verdict
from .ranking import tiny_chain

__all__ = ["PIECES", "check_prune_train_repeat"]

#: What the loop may call in pruning_lib: the pieces of notebook 03's ten lines (ranking, plan, surgery, widths,
#: fine-tuning, evaluation); `recover.iterative`, `recover.oneshot`, `course` and `api` run whole loops.
PIECES = ("pruning_lib.rank", "pruning_lib.plan", "pruning_lib.surgery", "pruning_lib.graph",
          "pruning_lib.recover.train", "pruning_lib.recover.evaluation")
ROW = ("widths", "accuracy_before_finetune", "accuracy_after_finetune")
INPUT_SHAPE = (1, 8, 8)
LR = 1e-2
#: (seed, iterations, filters_per_iteration, finetune_steps): the runs compared.
CASES = ((0, 3, 4, 2), (1, 2, 6, 3))
_FIT = "train.fit(model, train_batches, steps=finetune_steps, lr=lr): Adam, cross-entropy, a constant learning rate"


def _labelled(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n images of three classes that differ in brightness (learnable in a few steps), and their labels."""
    y = torch.randint(0, 3, (n,), generator=gen)
    return torch.randn(n, 1, 8, 8, generator=gen) + 0.7 * (y - 1).float()[:, None, None, None], y


def _setup(seed: int) -> tuple[nn.Module, list, list]:
    """A tiny conv chain (6, 8 and 5 filters), 3 training batches of 8 images, 2 validation batches of 16."""
    gen = torch.Generator().manual_seed(seed)
    return (tiny_chain(seed, inplace=False), [_labelled(8, gen) for _ in range(3)],
            [_labelled(16, gen) for _ in range(2)])


def _library_run(model, train_batches, val_batches, iterations: int, k: int, steps: int, **changes):
    """The library's loop with the exercise's schedule (`changes` alter it): (pruned model, one row per iteration)."""
    total = sum(group_widths(model).values())
    schedule = PruningSchedule(criterion="taylor", filters_per_iteration=k, finetune_steps=steps, rank_batches=2,
                               lr=LR, target_fraction=iterations * k / total, **changes)
    pruned, history = prune_train_repeat(model, train_batches, val_batches, schedule, input_shape=INPUT_SHAPE,
                                         progress=False)
    convs = [c.removeprefix("filters:") for c in history.columns if c.startswith("filters:")]
    rows = [{"widths": {c: int(r[f"filters:{c}"]) for c in convs},
             "accuracy_before_finetune": float(r["accuracy_before_finetune"]),
             "accuracy_after_finetune": float(r["accuracy_after_finetune"])} for _, r in history.iloc[1:].iterrows()]
    return pruned, rows


def _student_rows(got, iterations: int) -> tuple[nn.Module, list[dict]]:
    """The student's (model, history), checked for its form and made plain."""
    if not isinstance(got, tuple) or len(got) != 2:
        raise Wrong(f"return a pair (model, history), not {type(got).__name__}")
    model, rows = got
    if not isinstance(model, nn.Module):
        raise Wrong(f"return the pruned model first, not {type(model).__name__}")
    rows = list(rows)
    if len(rows) != iterations:
        raise Wrong(f"{len(rows)} rows of history for {iterations} iterations: one dict per iteration")
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping) or any(key not in row for key in ROW):
            what = f"has the keys {sorted(row)}" if isinstance(row, Mapping) else f"is a {type(row).__name__}"
            raise Wrong(f"row {i} of the history {what}: give each iteration a dict with the keys {list(ROW)}")
    return model, [{"widths": {str(c): int(n) for c, n in dict(r["widths"]).items()},
                    "accuracy_before_finetune": float(r["accuracy_before_finetune"]),
                    "accuracy_after_finetune": float(r["accuracy_after_finetune"])} for r in rows]


def _differs(got: dict, want: dict, key: str) -> bool:
    return got[key] != want[key] if key == "widths" else abs(got[key] - want[key]) > 1e-6


def _first_difference(got: list[dict], want: list[dict]) -> tuple[int, str] | None:
    """(iteration, key) of the first entry of the history that differs, or None."""
    return next(((i, key) for i, (g, w) in enumerate(zip(got, want), start=1) for key in ROW if _differs(g, w, key)),
                None)


def _cut(scores, widths: Mapping[str, int], n: int, **options) -> dict[str, int]:
    plan = plan_from_scores(scores, n, **{"min_keep": 1, **options})
    return {c: w - len(plan[c]) for c, w in widths.items()}


def _first_cuts(model: nn.Module, train_batches, k: int) -> dict[str, tuple[dict, str]]:
    """The widths a typical other first cut gives, ``{what it is: (widths, the fix)}``; notebook 03's settings are
    those of its quick profile, `P` in its ten lines."""
    widths, p = group_widths(model), QUICK
    scores = rank_filters(model, train_batches[:2], "taylor")
    penalised = regularised_scores(scores, flops_per_channel(model, INPUT_SHAPE), p.flops_lambda)
    share = round(p.fraction_per_iteration * sum(widths.values()))
    floors = layer_floors(widths, min_keep=1, max_fraction=p.max_fraction)
    return {
        "notebook 03's settings (P's FLOPs penalty, share per iteration, blocks, cap)": (
            _cut(penalised, widths, share, min_keep=floors, multiple_of=p.multiple_of),
            "this exercise has none of them: Taylor alone, filters_per_iteration single filters, at least one left "
            "per conv, plain cross-entropy and a constant learning rate"),
        f"the FLOPs penalty λ = {p.flops_lambda}": (_cut(penalised, widths, k),
                                                   "this exercise ranks by Taylor alone: no regularised_scores"),
        f"a share of the filters left ({p.fraction_per_iteration})": (
            _cut(scores, widths, share), "remove filters_per_iteration filters in every iteration"),
        f"blocks of {p.multiple_of} filters": (_cut(scores, widths, k, multiple_of=p.multiple_of),
                                               "remove single filters: multiple_of=1, the default"),
        "raw scores": (_cut(rank_filters(model, train_batches[:2], "taylor", normalize=None), widths, k),
                       "normalise per layer: rank_filters' default, normalize='l2'"),
        "ranking on every training batch": (_cut(rank_filters(model, train_batches, "taylor"), widths, k),
                                            "rank on the first 2 training batches only"),
    }


def _widths_hint(i: int, got: list[dict], model: nn.Module, train_batches, k: int) -> str:
    """Why the widths after iteration `i` differ, as far as the checker can tell."""
    if i == 1:
        named = next(((what, fix) for what, (w, fix) in _first_cuts(model, train_batches, k).items()
                      if w == got[0]["widths"]), None)
        if named:
            return f" (that is with {named[0]}: {named[1]})"
    else:
        stale = _cut(rank_filters(model, train_batches[:2], "taylor"), group_widths(model), i * k)
        if stale == got[i - 1]["widths"]:
            return (" (that is the first ranking's choice, ranked once: rank the current, already pruned model again "
                    "in every iteration)")
    before = group_widths(model) if i == 1 else got[i - 2]["widths"]
    removed = sum(before.values()) - sum(got[i - 1]["widths"].values())
    if removed != k:
        return f" ({removed} filters removed: remove filters_per_iteration ({k}) in every iteration)"
    return (" (rank the current, already pruned model again in every iteration: Taylor on the first 2 training "
            "batches, normalised per layer; then the globally lowest filters_per_iteration, at least one left per "
            "conv)")


def _accuracy_hint(i: int, key: str) -> str:
    if key == "accuracy_before_finetune":
        fit = "" if i == 1 else f", after the previous iteration's fine-tune ({_FIT})"
        return f" (measure evaluate(model, val_batches)['accuracy'] right after the surgery, before fine-tuning{fit})"
    return f" (fine-tune with {_FIT}, then evaluate on val_batches)"


def _same_start(got: list[dict], other: list[dict], i: int) -> bool:
    """Whether the student's first `i` iterations are exactly those of `other`."""
    return len(other) >= i and not any(_differs(g, o, key) for g, o in zip(got[:i], other) for key in ROW)


def _moves(row: dict) -> bool:
    return abs(row["accuracy_after_finetune"] - row["accuracy_before_finetune"]) > 1e-6


def _never_fine_tunes(got: list[dict], want: list[dict]) -> bool:
    """The student's accuracy never moves in a fine-tune, where the library's does."""
    return not any(map(_moves, got)) and any(map(_moves, want))


def _judge(got: list[dict], want: list[dict], setup, iterations: int, k: int, steps: int, where: str) -> None:
    """Raise `Wrong` at the first entry of the student's history that differs from the library's, with a hint."""
    first = _first_difference(got, want)
    if first is None:
        return
    i, key = first
    model, train_batches, val_batches = setup
    _, cosine = _library_run(copy.deepcopy(model), train_batches, val_batches, iterations, k, steps,
                             lr_schedule="cosine")
    if _never_fine_tunes(got, want):
        hint = f" (the accuracy never changes in a fine-tune: fine-tune after each prune, {_FIT})"
    elif _same_start(got, cosine, i):
        hint = f" (that is with a cosine learning rate: fine-tune with {_FIT})"
    elif key == "widths":
        hint = _widths_hint(i, got, model, train_batches, k)
    else:
        hint = _accuracy_hint(i, key)
    g, w = got[i - 1][key], want[i - 1][key]
    values = f"{g}, expected {w}" if key == "widths" else f"{g:.4f}, expected {w:.4f}"
    raise Wrong(f"{where}, iteration {i}: {key} {values}{hint}")


def check_prune_train_repeat(loop: Callable) -> bool:
    """03: ``loop(model, train_batches, val_batches, *, iterations, filters_per_iteration, finetune_steps, lr)
    -> (model, history)``, with one dict per iteration in ``history``: ``"widths"`` (``graph.groups.group_widths``
    after the cut), ``"accuracy_before_finetune"`` and ``"accuracy_after_finetune"`` (``evaluate`` on
    `val_batches`, fractions).  Each iteration: Taylor scores from the first 2 training batches (normalised per
    layer), the globally lowest `filters_per_iteration` removed (at least one filter left in every conv), then
    ``train.fit`` for `finetune_steps` (>= 1) steps at `lr`.  Checked against `iterative.prune_train_repeat` on a
    tiny model; only the loop's pieces (`PIECES`) may come from pruning_lib."""
    loop = without_library(loop, allowed=PIECES, job="the loop")

    def check() -> None:
        for seed, iterations, k, steps in CASES:
            setup = _setup(seed)
            model, train_batches, val_batches = setup
            want_model, want = _library_run(copy.deepcopy(model), train_batches, val_batches, iterations, k, steps)
            got = loop(copy.deepcopy(model), [b for b in train_batches], [b for b in val_batches],
                       iterations=iterations, filters_per_iteration=k, finetune_steps=steps, lr=LR)
            got_model, got = _student_rows(got, iterations)
            _judge(got, want, setup, iterations, k, steps, f"model {seed}")
            if group_widths(got_model) != want[-1]["widths"]:
                raise Wrong(f"model {seed}: the returned model has the widths {group_widths(got_model)}, not those of "
                            "the last iteration: return the model you pruned and fine-tuned")
            state, ref = got_model.state_dict(), want_model.state_dict()
            if any(not close(state[name], t, rtol=1e-4, atol=1e-5) for name, t in ref.items() if name in state):
                raise Wrong(f"model {seed}: the returned model's weights are not those after the last fine-tune")
    return verdict("Prune–Train–Repeat by hand", check, notebook="03", exercise="prune_train_repeat_by_hand")
