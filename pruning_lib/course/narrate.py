"""The notebooks' "What we saw" paragraphs: the numbers of the run, in sentences (never typed by hand).

Each function returns Markdown text for ``IPython.display.Markdown``; the words that carry a lesson
("ahead", "tied"; "met", "missed", "within the noise") come from the lesson entries (`course.lessons.verdict`,
`lessons.judged`), each with the noise it used, so the prose cannot say more than the measurement.  What the
numbers mean is written by hand in each notebook's "What it means" cell, where a teacher can edit it (as "if ...,
then ..." where the run decides); only the numbers and the words the run chooses are generated here, never an
explanation.  `over_seeds` puts the calibration over seeds beside a lesson of this run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ..measure import machine_info
from .lessons import MET, MISSED, WITHIN, TEST_NOISE, equal_cost, judged, outcome, verdict
from .profiles import QUICK, Profile, apply_overrides

__all__ = ["fine_tuning", "iterative", "over_seeds", "profile_table", "ranking", "resnet", "runtimes", "shows", "speed"]


def profile_table(profile: Profile, fields: Sequence[str]) -> pd.DataFrame:
    """The profile's `fields` as a one-column table (a notebook shows only the settings it uses)."""
    values = profile.as_dict()
    unknown = [f for f in fields if f not in values]
    if unknown:
        raise ValueError(f"{unknown} are not fields of Profile; choose from {sorted(values)}")
    return pd.DataFrame({f"profile {profile.name!r}": {f: str(values[f]) for f in fields}})


def shows(entry: Mapping[str, Any]) -> str:
    """A lesson's outcome (`lessons.outcome`) in a few words: "shows: met beyond the noise", "does not show: missed
    beyond the noise", "is within the noise: neither shown nor refuted", or "reported" (reported whatever it shows)."""
    if entry.get("reported_only"):
        return "reported"
    return {MET: "shows: met beyond the noise", MISSED: "does not show: missed beyond the noise",
            WITHIN: "is within the noise: neither shown nor refuted"}[outcome(entry)]


def fine_tuning(*, params: int, mflops: float, conv_share: float, train_images: int, steps: int, seconds: float,
                accuracy: float, n_test: int, stderr_points: float) -> str:
    """Notebook 01: the baseline in three sentences."""
    return (f"The pretrained network has {params:,} parameters and costs {mflops:.1f} MFLOPs per image; its "
            f"convolutions do {conv_share:.0f}% of the counted FLOPs (2 per multiply-add; activations, pooling and "
            f"biases are not counted).  Fine-tuned on {train_images:,} images for {steps} steps ({seconds:.0f} s), it recognises "
            f"{100 * accuracy:.1f}% of the {n_test:,} test images (± {stderr_points:.1f} points, one standard error of "
            "the test set: another seed or machine trains another network, whose accuracy moves by more).")


def ranking(lesson: Mapping[str, Any], *, rank_seconds: float, oracle_seconds: float) -> str:
    """Notebook 02: what the criteria lesson measured (with each side's FLOPs when the entry has them)."""
    m = lesson["measured"]
    mid = m["amounts"][f"{m['middle_amount']:g}"]
    rho = ", ".join(f"{c} {v:+.2f}" for c, v in sorted(m["rho"].items(), key=lambda kv: -kv[1]))
    cost = (lambda side: f" at {mid[side + '_mflops']:.1f} MFLOPs") if "taylor_mflops" in mid else (lambda side: "")
    text = (f"All criteria together took {rank_seconds:.1f} s; the oracle {oracle_seconds:.0f} s. "
            f"Against the oracle, Spearman ρ (all layers, L2-normalised) ranks them {rho}. "
            f"Removing {100 * m['middle_amount']:.0f}% of the filters at once, with no fine-tuning, Taylor keeps "
            f"{mid['taylor']:.1f}% accuracy{cost('taylor')} and random {mid['random']:.1f}%{cost('random')}: Taylor is "
            f"{verdict(lesson)}; it is {'never' if m['never_behind'] else 'sometimes'} behind random beyond the noise. ")
    eq = m.get("equal_cost", "absent")
    if eq is None:
        text += "No random network of the curve has as many FLOPs as Taylor's: no comparison at equal cost. "
    elif eq != "absent":
        text += (f"At equal cost, against the random network with at least Taylor's FLOPs ({100 * eq['random_amount']:.0f}% "
                 f"removed, {eq['random_mflops']:.1f} MFLOPs against Taylor's {eq['taylor_mflops']:.1f}), Taylor is "
                 f"{verdict(eq)}. ")
    return text + f"The lesson *criteria differ* (Taylor at least {lesson['threshold_points']:g} points ahead) is {judged(lesson)}."


def iterative(lessons: Mapping[str, Mapping[str, Any]],
              calibration: Mapping[str, pd.DataFrame] | None = None) -> str:
    """Notebook 03: one sentence per lesson, each with its verdict and the noise it used; with `calibration`
    (``{lesson: calibration.lesson_over_seeds(lesson)}``) each also says how the calibration's seeds came out."""
    calibration = calibration or {}

    def seeds(name: str) -> str:
        table = calibration.get(name)
        return f" Over the calibration's seeds: {_counts(table)}." if table is not None and len(table) else ""

    parts = []
    if "too_much_at_once" in lessons:
        e = lessons["too_much_at_once"]
        parts.append(f"With the same budget and loss, Prune–Train–Repeat is {verdict(e)} against removing everything "
                     f"at once: the lesson *too much at once cannot be repaired* (the loop ahead by at least "
                     f"{e['threshold_points']:g} points) {shows(e)}." + seeds("too_much_at_once"))
    if "pruning_beats_scratch" in lessons:
        e = lessons["pruning_beats_scratch"]
        m = e["measured"]
        noise3 = m.get("noise_3x_points")
        parts.append(f"The pruned network is {verdict(e)} against the same architecture trained from scratch with at "
                     f"most as many steps, and {m.get('gap_3x_points', float('nan')):+.1f} points"
                     + (f" ± {noise3:.1f}" if noise3 is not None else "") + " against at most 3× the steps (every side "
                     "stopped on the same validation plateau, its best weights kept): the lesson *pruning beats training "
                     f"small* (ahead of both by at least {e['threshold_points']:g} points) {shows(e)}."
                     + seeds("pruning_beats_scratch"))
    if "random_catches_up" in lessons:
        e = lessons["random_catches_up"]
        cost = e["measured"].get("mflops", {})
        if cost and not equal_cost(cost, 0.1):
            parts.append(f"At the end of the same schedule Taylor's network and random's do not cost the same "
                         f"({cost['taylor']:.1f} against {cost['random']:.1f} MFLOPs), so their gap on the test set "
                         f"({e['gap_points']:+.2f} points ± {e['noise_points']:.2f}, {TEST_NOISE}) is no verdict on the "
                         "criteria: section 6 compares them at equal FLOPs.")
        else:
            parts.append(f"At the end of the same schedule, at about the same cost, Taylor is {verdict(e)} against "
                         "random pruning (reported whatever it shows).")
    if "headline" in lessons:
        e = lessons["headline"]
        m = e["measured"]
        lost = m.get("checks", {}).get("points_lost", outcome(e))
        parts.append(f"The post's headline point: {m['flops_ratio']:.1f}× fewer FLOPs, {m['params_ratio']:.1f}× fewer "
                     f"parameters, {e['gap_points']:+.2f} points ± {e['noise_points']:.2f} of test accuracy lost "
                     f"({TEST_NOISE}; at most {m.get('max_points_lost', 1.0):g} point: {lost}); notebook 04 measures its "
                     "speed." + seeds("headline"))
    return " ".join(parts)


def _counts(table: pd.DataFrame) -> str:
    """"met in 2 seeds of 4, missed in 2" or "within the noise in every seed (4)"."""
    counts = table["outcome"].value_counts()
    if len(counts) == 1:
        return f"{counts.index[0]} in every seed ({len(table)})"
    ordered = [o for o in (MET, WITHIN, MISSED) if o in counts] + [o for o in counts.index if o not in (MET, WITHIN, MISSED)]
    return ", ".join(f"{o} in {counts[o]}" + (f" seed{'s' if counts[o] > 1 else ''} of {len(table)}" if i == 0 else "")
                     for i, o in enumerate(ordered))


def over_seeds(name: str, table: pd.DataFrame, entry: Mapping[str, Any] | None = None, *,
               profile: Profile | None = None, machine: Mapping[str, Any] | None = None) -> str:
    """The calibration over seeds of one lesson beside this run's number, in plain text (print it).

    `table` is `calibration.lesson_over_seeds(name)` (its note when it is empty); `entry` this run's entry; `profile`
    this run's profile, to say when the calibration used other settings; `machine` where this run is
    (default: `measure.machine_info()`), to say when the calibration ran on another CPU.  Numbers only, and the
    outcomes the seeds had: how much the gap moves from seed to seed is the run-to-run noise that the test set's
    noise does not hold.
    """
    if not len(table):
        return table.attrs.get("note") or f"No calibration over seeds for {name!r}."
    a = table.attrs
    where = a.get("machine") or {}
    overrides = a.get("overrides") or ""
    headline = "checks" in table.columns
    reported = bool((table["outcome"] == "reported").all()) or bool(entry is not None and entry.get("reported_only"))
    what = "points lost" if headline else "gap"
    cells = ", ".join(f"{g:+.1f} ± {n:.1f}" if n is not None and not math.isnan(n) else f"{g:+.1f}"
                      for g, n in zip(table["gap_points"], table["noise_points"]))
    seeds = ", ".join(str(s) for s in table.index)
    gaps = table["gap_points"].astype(float)
    text = (f"Calibration over seeds ({a.get('path')}: the quick profile" + (f" with {overrides}" if overrides else "")
            + f", seeds {seeds}, on {where.get('processor', 'an unrecorded CPU')} with torch {where.get('torch', '?')}): "
            f"the {what} {'were' if headline else 'was'} {cells} points ({TEST_NOISE} of each seed); from seed to seed "
            f"{'they' if headline else 'it'} moved over "
            f"{gaps.max() - gaps.min():.1f} points ({gaps.min():+.1f} to {gaps.max():+.1f}), run-to-run noise that "
            "the test set's noise does not hold.")
    if headline:
        speed = table["speedup"].astype(float) if "speedup" in table.columns else pd.Series(dtype=float)
        if speed.notna().any():
            text += " Speedup " + ", ".join("not timed" if math.isnan(v) else f"{v:.2f}×" for v in speed) + "."
        missed = {k: [str(s) for s, c in table["checks"].items() if isinstance(c, Mapping) and c.get(k) == MISSED]
                  for k in ("speedup", "params_ratio", "points_lost")}
        why = "; ".join(f"{k.replace('_', ' ')} missed in seed{'s' if len(v) > 1 else ''} {', '.join(v)}"
                        for k, v in missed.items() if v)
        text += f" The post's claim: {_counts(table)}" + (f" ({why})." if why else ".")
    elif reported:
        text += " Reported whatever it shows: no threshold is judged."
    else:
        text += f" Against the {float(table['threshold_points'].iloc[0]):g}-point threshold: {_counts(table)}."
    if entry is not None:
        seed = f" (seed {profile.seed})" if profile is not None else ""
        checks = entry.get("measured", {}).get("checks", {})
        said = (f"the accuracy check {checks.get('points_lost')}, its speed not measured here" if headline and
                entry["measured"].get("speedup") is None else "reported" if reported else outcome(entry))
        text += f" This run{seed}: {entry['gap_points']:+.2f} ± {entry['noise_points']:.2f} {what}, {said}."
    if profile is not None:
        try:
            calibrated = apply_overrides(QUICK, overrides)
        except ValueError:
            calibrated = None
        mine, theirs = dataclasses.asdict(profile), dataclasses.asdict(calibrated) if calibrated else {}
        other = [k for k in mine if k != "seed" and mine[k] != theirs.get(k)]
        if profile.name != QUICK.name:
            text += f" This run is the {profile.name} profile: the calibration's seeds describe another experiment."
        elif other:
            text += (f" This run's settings are not the calibration's ({', '.join(other[:4])}"
                     + (", ..." if len(other) > 4 else "") + " differ): its seeds describe another experiment.")
    here = (machine if machine is not None else machine_info()).get("processor")
    if where.get("processor") and here and here != where.get("processor"):
        text += (f" The calibration ran on another CPU than this run ({here}): the same seed can give other numbers "
                 "here.")
    return text


def speed(lesson: Mapping[str, Any], *, form: str, batch: int, threads: int) -> str:
    """Notebook 04: the headline with its measured speedup."""
    m = lesson["measured"]
    checks = m["checks"]
    names = {"speedup": "speed", "params_ratio": "size", "points_lost": "accuracy"}
    by = {o: [names[k] for k, v in checks.items() if v == o] for o in ("missed", "within the noise")}
    result = lesson.get("outcome", "met" if lesson["shows"] else "missed")
    said = {"met": "is met beyond the noise", "missed": "is missed", "within the noise": "is within the noise"}[result]
    detail = "; ".join(f"{o}: {', '.join(v)}" for o, v in by.items() if v)
    return (f"Against the dense network ({form} form, batch {batch}, {threads} thread): {m['speedup']:.2f}× faster "
            f"(± {m.get('speedup_noise', 0.0):.2f} over the harness's rounds), {m['params_ratio']:.1f}× fewer parameters, "
            f"{lesson['gap_points']:+.2f} ± {lesson['noise_points']:.2f} points of test accuracy lost.  The post's claim "
            f"(at least {m.get('min_speedup', 3.0):g}× faster, {m.get('min_params_ratio', 4.0):g}× fewer parameters, at "
            f"most {m.get('max_points_lost', 1.0):g} point lost) {said}" + (f" ({detail})." if detail else ".")
            + f"  Beside it, how well FLOPs predicted the time: {m['flops_ratio']:.1f}× fewer FLOPs gave "
            f"{m['speedup']:.2f}× the speed, {m['speedup'] / m['flops_ratio']:.2f} of the FLOPs ratio.")


def resnet(report: Mapping[str, Any]) -> str:
    """Notebook 05: the pruned ResNet against its targets (with their outcomes and noise), its speed beside them,
    where the speed falls short of the FLOPs (when the report has ``time``) and what each kind of group kept.
    Numbers and the words the run chooses only: what they mean is the notebook's "What it means"."""
    t, m = report["targets"], report["measurement"]
    pruned, dense = report["pruned"][report["headline"]], report["dense"]
    kept = report["groups"].get("kept_by_kind", {})
    stream, inside = kept.get("residual stream"), kept.get("inside a block")
    lost, noise = t["points_lost"]["measured"], t["points_lost"].get("noise")
    said = ""
    if noise:
        said = (f" (± {noise:.2f}, {TEST_NOISE}: " + ("within it, no change shown)" if abs(lost) <= noise
                                                     else "beyond it)"))
    text = (f"Prune–Train–Repeat with Taylor took the ResNet to {t['flops_ratio']['measured']:.2f}× fewer FLOPs "
            f"({pruned['mflops']:.1f} of {dense['mflops']:.1f} MFLOPs) "
            + (f"losing {lost:.2f} points of test accuracy" if lost >= 0 else f"with {-lost:.2f} points *more* test accuracy")
            + said + f", and it runs {pruned['speedup']:.2f}× faster ({m['form']} form, batch {m['batch_size']}, "
            f"{m['num_threads']} thread): {pruned['speedup'] / t['flops_ratio']['measured']:.2f} of the FLOPs ratio "
            "(how well FLOPs predict time here, a measure, not a target). ")
    outcomes = {k: v.get("outcome", MET if v["met"] else MISSED) for k, v in t.items()}
    names = {o: [k.replace("_", " ") for k, v in outcomes.items() if v == o] for o in (MISSED, WITHIN)}
    if not names[MISSED] and not names[WITHIN]:
        text += "Both targets (FLOPs and accuracy) are met beyond the noise."
    else:
        text += "; ".join(([f"Targets missed: {', '.join(names[MISSED])}"] if names[MISSED] else [])
                          + ([f"within the noise: {', '.join(names[WITHIN])}"] if names[WITHIN] else [])) + "."
    time = report.get("time")
    if time:
        text += (f" Timed layer by layer, the layers with FLOPs run {time['conv_speedup']:.2f}× faster for "
                 f"{time['flops_ratio']:.2f}× fewer FLOPs ({time['gflop_per_s_pruned']:.0f} against "
                 f"{time['gflop_per_s_dense']:.0f} GFLOP/s), all layers together {time['timed_speedup']:.2f}×; the "
                 f"layers without FLOPs take {100 * time['other_share_dense']:.0f}% of the dense time and "
                 f"{100 * time['other_share_pruned']:.0f}% of the pruned.")
        part = time.get("conv_part")
        if part is not None and 0 <= part <= 1:
            text += (f" Of the shortfall from the FLOPs ratio to the layer-by-layer speedup (on a log scale), the "
                     f"layers with FLOPs account for {100 * part:.0f}%, the layers without FLOPs for "
                     f"{100 * (1 - part):.0f}%.")
    if stream is not None and inside is not None:
        text += (f" The residual streams kept {stream:.0f}% of their channels, the groups inside blocks {inside:.0f}%"
                 + (": the streams kept the larger share." if stream > inside else
                    ": here the loop did not spare the streams."))
    return text


def runtimes(table: pd.DataFrame, *, pruned: str, torch_form: str, batch: int, threads: int) -> str:
    """Notebook 04: does the speedup survive ONNX Runtime?  `table` is a `side_by_side` slice at one batch,
    indexed by (form, model)."""
    ort, mine = table.loc[("onnxruntime", pruned)], table.loc[(torch_form, pruned)]
    dense_gain = table.loc[(torch_form, "dense"), "latency_ms"] / table.loc[("onnxruntime", "dense"), "latency_ms"]
    text = (f"In ONNX Runtime (batch {batch}, {threads} thread) the pruned network is {ort['speedup']:.2f}× faster than "
            f"the dense one (against {mine['speedup']:.2f}× in PyTorch's {torch_form} form) for {ort['flops_ratio']:.2f}× "
            f"fewer FLOPs: {ort['speedup_per_flops']:.2f} of the FLOPs ratio, against {mine['speedup_per_flops']:.2f} in "
            f"PyTorch. ")
    text += (f"ONNX Runtime runs the dense network {dense_gain:.2f}× "
             + ("faster" if dense_gain >= 1 else "slower") + f" than PyTorch's {torch_form} form")
    if ("openvino", pruned) in table.index:
        text += f"; OpenVINO gives the pruned network {table.loc[('openvino', pruned), 'speedup']:.2f}×"
    return text + "."
