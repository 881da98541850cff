"""Does the latency model add up?  Predicted against measured end-to-end latency over random width patterns.

For each network (the quick VGG and the small ResNet at 28x28, torchvision's ResNet-18 and MobileNetV2 at
112x112; random weights: a dense layer's time does not depend on them) and each batch (8 and 64), one thread:

- **the model** (`cost.latency.LatencyModel`): every block timed alone at the sizes a pattern gives it, summed,
  calibrated on two end-to-end measurements (the dense network and a copy with every group at half its width,
  neither of them a pattern it predicts); entries start from an empty cache, and the seconds spent measuring them
  are reported;
- **the baseline**, the library's previous latency table: the whole network timed once per width of every group
  (the others at full width), in steps of 16, as paired savings against the dense network in interleaved rounds,
  ties to 0 and a monotone envelope; a pattern's time is the dense time minus its groups' savings added up
  (each group at the nearest measured width at or above its own), scaled to the harness's dense time;
- `--patterns` random patterns (each group at a random 30-100% of its width), each pattern's network built and
  timed end to end with the dense one in one interleaved harness (`cost.validation.predicted_vs_measured`).

The target (issue 32): predicted within +-10% of measured for at least 90% of the patterns.  Usage::

    python benchmarks/latency_model.py [--nets small_vgg small_resnet resnet18 mobilenet_v2] [--batches 8 64]
        [--forms deploy onnxruntime] [--patterns 20] [--baseline-max 2000] [--out build/latency_model]

One JSON per (network, batch, form) in ``--out`` (read back on a second run unless ``--again``), and a Markdown
table of all of them (``latency_model.md``).  The baseline is skipped where it would time more than
``--baseline-max`` seconds (ResNet-18 and MobileNetV2 at batch 64: said in the table).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision

from pruning_lib import measure, runtime
from pruning_lib.cost.latency import LatencyModel
from pruning_lib.cost.validation import predicted_vs_measured, random_widths
from pruning_lib.course import experiment
from pruning_lib.course.paths import REPO_ROOT
from pruning_lib.course.profiles import get_profile
from pruning_lib.measure.harness import interleaved, spread
from pruning_lib.surgery import with_widths


def network(name: str) -> tuple[torch.nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    if name in ("small_vgg", "small_resnet"):
        profile = get_profile("quick", f"model={name}")
        return experiment.architecture(profile).eval(), tuple(profile.input_shape)
    build = {"resnet18": torchvision.models.resnet18, "mobilenet_v2": torchvision.models.mobilenet_v2}[name]
    return build(num_classes=10).eval(), (3, 112, 112)


# ---------------------------------------------------------------- the baseline: the previous latency table
def table_savings(model, shape, form, threads, step=16, rounds=7, calls=3):
    """{group: {width: ms saved}}: each group's widths on a grid of `step`, the network otherwise whole, timed as
    paired savings against it (per round: reference median - variant median), the median over rounds; a saving
    within its noise is 0, and a narrower width never saves less than a wider one (the previous table)."""
    widths = LatencyModel(model, shape, cache=False).widths
    variants = {(g, w): with_widths(model, {g: w}) for g, n in widths.items() for w in range(step, n, step)}
    x = torch.randn(shape)
    with runtime.num_threads(threads), torch.no_grad():
        runners = {"reference": measure.forward_runner(model, x, form, threads)}
        runners.update({f"{g}@{w}": measure.forward_runner(m, x, form, threads) for (g, w), m in variants.items()})
        timed = interleaved(runners, rounds=rounds, calls=calls)
    saved = {g: {n: 0.0} for g, n in widths.items()}
    for (g, w) in variants:
        diffs = [r["reference"] - r[f"{g}@{w}"] for r in timed]
        s = statistics.median(diffs)
        saved[g][w] = s if s > spread(diffs) else 0.0
    for g, by_width in saved.items():                 # the monotone envelope
        ws = sorted(by_width)
        env = np.maximum.accumulate([by_width[w] for w in ws][::-1])[::-1]
        saved[g] = dict(zip(ws, map(float, env)))
    return saved, statistics.median(r["reference"] for r in timed), len(variants)


def table_prediction(saved, reference_ms, pattern):
    total = 0.0
    for g, w in pattern.items():
        at = min(x for x in saved[g] if x >= w)
        total += saved[g][at]
    return reference_ms - total


def run(name: str, batch: int, form: str, patterns: int, baseline_max: int) -> dict:
    model, image = network(name)
    shape = (batch, *image)
    measure.keep_freed_memory()
    with tempfile.TemporaryDirectory() as cache:       # every entry measured anew: the cold cost is reported
        os.environ["PRUNING_CACHE_DIR"] = cache
        start = time.perf_counter()
        latency = LatencyModel(model, shape, form=form)
        pats = random_widths(latency.widths, patterns, seed=0)
        latency.ensure([{}, *pats])
        model_seconds = time.perf_counter() - start
        table = predicted_vs_measured(model, shape, pats, form=form, latency=latency)
    row = {"net": name, "batch": batch, "form": form, "patterns": patterns, "entries": latency.store.measured,
           "entry_seconds": round(latency.store.seconds, 1), "model_seconds": round(model_seconds, 1),
           "blocks": len(latency.blocks), "reference_ms": table.attrs["reference_ms"],
           "sum_ms": table.attrs["sum_ms"], "residual_ms": table.attrs["residual_ms"],
           "rows": table.reset_index().to_dict(orient="records"), "machine": measure.machine_info()}
    widths = latency.widths
    passes = sum(len(range(16, n, 16)) for n in widths.values()) * 7 * 3
    estimate = passes * table.attrs["reference_ms"] / 1e3
    if estimate <= baseline_max:
        start = time.perf_counter()
        saved, reference_ms, variants = table_savings(model, shape, form, 1)
        row["baseline_seconds"] = round(time.perf_counter() - start, 1)
        row["baseline_variants"] = variants
        # scaled to the harness's dense time, so both predictions start from the same measured network
        scale = table.attrs["reference_ms"] / reference_ms
        row["baseline_ms"] = [scale * table_prediction(saved, reference_ms, p) for p in pats]
    else:
        row["baseline_skipped"] = f"{passes} network passes, about {estimate / 60:.0f} min > --baseline-max {baseline_max} s"
    return row


def summary(rows: list[dict]) -> pd.DataFrame:
    out = []
    for r in rows:
        t = pd.DataFrame(r["rows"])
        err = t["error"].abs()
        line = {"network": r["net"], "batch": r["batch"], "form": r["form"],
                "dense ms": round(r["reference_ms"], 2), "blocks' sum ms": round(r["sum_ms"], 2),
                "model: median |error|": f"{100 * err.median():.1f}%",
                "model: within 10%": f"{int((err <= 0.10).sum())}/{len(t)}",
                "model: worst error": f"{100 * t['error'].iloc[err.argmax()]:+.1f}%",
                "entries (cold s)": f"{r['entries']} ({r['entry_seconds']:.0f} s)"}
        if "baseline_ms" in r:
            b = (np.array(r["baseline_ms"]) / t["measured_ms"].to_numpy() - 1)
            line["baseline: median |error|"] = f"{100 * np.median(np.abs(b)):.1f}%"
            line["baseline: within 10%"] = f"{int((np.abs(b) <= 0.10).sum())}/{len(t)}"
            line["baseline (s)"] = round(r["baseline_seconds"])
        else:
            line["baseline: median |error|"] = line["baseline: within 10%"] = "not run"
            line["baseline (s)"] = r["baseline_skipped"]
        out.append(line)
    return pd.DataFrame(out)


def markdown(df: pd.DataFrame) -> str:
    rows = [list(map(str, df.columns)), ["---"] * len(df.columns), *[[str(v) for v in r] for r in df.itertuples(index=False)]]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", nargs="+", default=["small_vgg", "small_resnet", "resnet18", "mobilenet_v2"])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--forms", nargs="+", default=["deploy"])
    parser.add_argument("--ort-nets", nargs="+", default=["small_vgg", "resnet18"],
                        help="the networks also measured in the runtimes of --forms other than deploy")
    parser.add_argument("--patterns", type=int, default=20)
    parser.add_argument("--baseline-max", type=float, default=600, help="seconds the baseline's timing may take "
                        "(estimated from the network's time and the passes it needs)")
    parser.add_argument("--out", default=str(REPO_ROOT / "build" / "latency_model"))
    parser.add_argument("--again", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for form in args.forms:
        for name in args.nets if form == "deploy" else [n for n in args.nets if n in args.ort_nets]:
            for batch in args.batches:
                path = out / f"{name}_b{batch}_{form}.json"
                if path.exists() and not args.again:
                    rows.append(json.loads(path.read_text()))
                    continue
                start = time.perf_counter()
                row = run(name, batch, form, args.patterns, args.baseline_max)
                row["seconds"] = round(time.perf_counter() - start)
                path.write_text(json.dumps(row, indent=1))
                rows.append(row)
                print(f"{name} batch {batch} {form}: {row['seconds']} s", file=sys.stderr, flush=True)
    text = markdown(summary(rows))
    (out / "latency_model.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
