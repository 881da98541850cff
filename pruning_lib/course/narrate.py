"""The notebooks' "What we saw" paragraphs: the numbers of the run, in sentences (never typed by hand).

Each function returns Markdown text for ``IPython.display.Markdown``; the words that carry a lesson
("ahead", "tied") come from the lesson entries (`course.lessons.verdict`), so the prose cannot say
more than the measurement.  What the numbers mean is written by hand in each notebook's "What it means" cell,
where a teacher can edit it; only a sentence the run decides (a target met or not) is chosen here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from .lessons import verdict
from .profiles import Profile

__all__ = ["fine_tuning", "iterative", "profile_table", "ranking", "resnet", "runtimes", "shows", "speed"]


def profile_table(profile: Profile, fields: Sequence[str]) -> pd.DataFrame:
    """The profile's `fields` as a one-column table (a notebook shows only the settings it uses)."""
    values = profile.as_dict()
    unknown = [f for f in fields if f not in values]
    if unknown:
        raise ValueError(f"{unknown} are not fields of Profile; choose from {sorted(values)}")
    return pd.DataFrame({f"profile {profile.name!r}": {f: str(values[f]) for f in fields}})


def shows(entry: Mapping[str, Any]) -> str:
    """"shows" / "does not show" / "reported" for a lesson entry."""
    if entry.get("reported_only"):
        return "reported"
    return "shows" if entry["shows"] else "does not show"


def fine_tuning(*, params: int, mflops: float, conv_share: float, train_images: int, steps: int, seconds: float,
                accuracy: float, n_test: int, stderr_points: float) -> str:
    """Notebook 01: the baseline in three sentences."""
    return (f"The pretrained network has {params:,} parameters and costs {mflops:.1f} MFLOPs per image; its "
            f"convolutions do {conv_share:.0f}% of the counted FLOPs (2 per multiply-add; activations, pooling and "
            f"biases are not counted).  Fine-tuned on {train_images:,} images for {steps} steps ({seconds:.0f} s), it recognises "
            f"{100 * accuracy:.1f}% of the {n_test:,} test images (± {stderr_points:.1f} points, one standard error).")


def ranking(lesson: Mapping[str, Any], *, rank_seconds: float, oracle_seconds: float) -> str:
    """Notebook 02: what the criteria lesson measured."""
    m = lesson["measured"]
    mid = m["amounts"][f"{m['middle_amount']:g}"]
    rho = ", ".join(f"{c} {v:+.2f}" for c, v in sorted(m["rho"].items(), key=lambda kv: -kv[1]))
    return (f"All criteria together took {rank_seconds:.1f} s; the oracle {oracle_seconds:.0f} s. "
            f"Against the oracle, Spearman ρ (all layers, L2-normalised) ranks them {rho}. "
            f"Removing {100 * m['middle_amount']:.0f}% of the filters at once, with no fine-tuning, Taylor keeps "
            f"{mid['taylor']:.1f}% accuracy and random {mid['random']:.1f}%: Taylor is "
            f"{verdict(lesson)}; it is {'never' if m['never_behind'] else 'sometimes'} behind random beyond the noise. "
            f"The lesson *criteria differ* {shows(lesson)}.")


def iterative(lessons: Mapping[str, Mapping[str, Any]]) -> str:
    """Notebook 03: one sentence per lesson, each with its verdict."""
    parts = []
    if "too_much_at_once" in lessons:
        e = lessons["too_much_at_once"]
        parts.append(f"With the same budget and loss, Prune–Train–Repeat is {verdict(e)} against removing everything "
                     f"at once: the lesson *too much at once cannot be repaired* {shows(e)}.")
    if "pruning_beats_scratch" in lessons:
        e = lessons["pruning_beats_scratch"]
        m = e["measured"]
        parts.append(f"The pruned network is {verdict(e)} against the same architecture trained from scratch with as many "
                     f"steps, and {m.get('gap_3x_points', float('nan')):+.1f} points against 3× the steps: the lesson "
                     f"*pruning beats training small* {shows(e)}.")
    if "random_catches_up" in lessons:
        e = lessons["random_catches_up"]
        cost = e["measured"].get("mflops", {})
        parts.append(f"At the end of the same schedule Taylor is {verdict(e)} against random pruning (reported whatever it "
                     "shows)" + (f", but the two networks do not cost the same ({cost['taylor']:.1f} against "
                                 f"{cost['random']:.1f} MFLOPs): the comparison at equal FLOPs is section 6's table."
                                 if cost and abs(cost["taylor"] / cost["random"] - 1) > 0.1 else "."))
    if "headline" in lessons:
        e = lessons["headline"]
        m = e["measured"]
        parts.append(f"The post's headline point: {m['flops_ratio']:.1f}× fewer FLOPs, {m['params_ratio']:.1f}× fewer "
                     f"parameters, {e['gap_points']:+.2f} points of accuracy lost (noise ±{e['noise_points']:.1f}); "
                     "notebook 04 measures its speed.")
    return " ".join(parts)


def speed(lesson: Mapping[str, Any], *, form: str, batch: int, threads: int) -> str:
    """Notebook 04: the headline with its measured speedup."""
    m = lesson["measured"]
    checks = m["checks"]
    names = {"speedup": "speed", "params_ratio": "size", "points_lost": "accuracy"}
    by = {o: [names[k] for k, v in checks.items() if v == o] for o in ("missed", "within the noise")}
    outcome = lesson.get("outcome", "met" if lesson["shows"] else "missed")
    said = {"met": "is met beyond the noise", "missed": "is missed", "within the noise": "is within the noise"}[outcome]
    detail = "; ".join(f"{o}: {', '.join(v)}" for o, v in by.items() if v)
    return (f"Against the dense network ({form} form, batch {batch}, {threads} thread): {m['speedup']:.2f}× faster "
            f"(± {m.get('speedup_noise', 0.0):.2f} over the harness's rounds), {m['params_ratio']:.1f}× fewer parameters, "
            f"{lesson['gap_points']:+.2f} ± {lesson['noise_points']:.2f} points of test accuracy lost.  The post's claim "
            f"(at least {m.get('min_speedup', 3.0):g}× faster, {m.get('min_params_ratio', 4.0):g}× fewer parameters, at "
            f"most {m.get('max_points_lost', 1.0):g} point lost) {said}" + (f" ({detail})." if detail else ".")
            + f"  Beside it, how well FLOPs predicted the time: {m['flops_ratio']:.1f}× fewer FLOPs gave "
            f"{m['speedup']:.2f}× the speed, {m['speedup'] / m['flops_ratio']:.2f} of the FLOPs ratio.")


def resnet(report: Mapping[str, Any]) -> str:
    """Notebook 05: the pruned ResNet against its targets, its speed beside them, and what the residual stream kept."""
    t, m = report["targets"], report["measurement"]
    pruned, dense = report["pruned"][report["headline"]], report["dense"]
    missed = [k.replace("_", " ") for k, v in t.items() if not v["met"]]
    kept = report["groups"].get("kept_by_kind", {})
    stream, inside = kept.get("residual stream"), kept.get("inside a block")
    lost = t["points_lost"]["measured"]
    text = (f"Prune–Train–Repeat with Taylor took the ResNet to {t['flops_ratio']['measured']:.2f}× fewer FLOPs "
            f"({pruned['mflops']:.1f} of {dense['mflops']:.1f} MFLOPs) "
            + (f"losing {lost:.2f} points of test accuracy" if lost >= 0 else f"with {-lost:.2f} points *more* test accuracy"
               + (" (less than a point: the test set's noise, not a gain)" if lost > -1 else ""))
            + f", and it runs {pruned['speedup']:.2f}× faster ({m['form']} form, batch {m['batch_size']}, "
            f"{m['num_threads']} thread): {pruned['speedup'] / t['flops_ratio']['measured']:.2f} of the FLOPs ratio "
            "(how well FLOPs predict time here, a measure, not a target). ")
    text += ("Both targets (FLOPs and accuracy) are met." if not missed else f"Targets missed: {', '.join(missed)}.")
    if stream is not None and inside is not None:
        text += (f" The residual streams kept {stream:.0f}% of their channels, the groups inside blocks {inside:.0f}%: "
                 + ("a stream channel is removed from a whole stage at once, so the loop spares it."
                    if stream > inside else "here the loop did not spare the streams."))
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
