"""Benchmark: speed and size of the pruned networks, from the command line (notebook 04's figures).

    python benchmarks/bench_speed.py [--profile quick] [--threads 1 2] [--batches 1 64] [--forms eager deploy onnxruntime]
                                     [--rounds 5] [--min-run-time 0.3] [--skip-sweep] [--skip-vgg16]
                                     [--out-dir build]

Needs notebook 03's results (``make demo``, or run notebooks 01-03): the pruned models in checkpoints/
and reports/iterative.json.  Prints the machine, threads and batch sizes, and writes
``build/bench_speed.json`` plus one CSV per table (``build/bench_speed_*.csv``):

1. **side_by_side**: dense vs Taylor- and random-pruned (notebook 03), per thread count, batch size
   and form (the PyTorch forms and the runtimes: ONNX Runtime, OpenVINO when installed; **runtimes** sums it
   up for the Taylor network): parameters, size on disk, FLOPs, latency (median and IQR of interleaved rounds),
   throughput, speedup, FLOPs ratio.  Accuracy is the test accuracy notebook 03 stored with each model
   (dense: evaluated here on the same test set).
2. **sweep**: speedup against FLOPs reduction for every iteration of notebook 03's Taylor and random runs
   (architectures rebuilt from their widths, random weights), at the profile's benchmark batch.
3. **batches**: the final models at several batch sizes.
4. **vgg16**: torchvision VGG16 (random weights) with about 60% of its 4,224 filters removed, distributed
   like notebook 03's Taylor run, at batch 1.
5. **torch_pruning**: the same pruned architecture built by Torch-Pruning (the dense baseline pruned with
   ``torch_pruning``, removing the same filter indices as our surgery): same widths? same outputs?
   same speed?  Both are timed interleaved in the same form.

glibc's malloc is told to keep freed memory (``measure.keep_freed_memory``, as in notebook 04; ``--default-malloc``
to leave it): otherwise every forward pass page-faults its feature maps back in, and the timings depend on
the allocator's history.  Forms (``pruning_lib.measure.FORMS``): ``eager`` is the model as trained; ``deploy`` folds BatchNorm into
the convs and uses channels-last tensors, for dense and pruned alike.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from pruning_lib import measure
from pruning_lib.graph.groups import group_widths
from pruning_lib.course import experiment, reports
from pruning_lib.course.profiles import get_profile
from pruning_lib.recover.evaluation import evaluate
from pruning_lib.recover.history import history_widths, speedup_sweep
from pruning_lib.plan import transfer_widths
from pruning_lib.surgery import with_widths
from pruning_lib.models.vgg16 import vgg16


# --------------------------------------------------------------------------- Torch-Pruning, same plan


def torch_pruning_same_widths(template: nn.Module, widths: Mapping[str, int], example: torch.Tensor) -> nn.Module:
    """A copy of `template` pruned by Torch-Pruning so that each conv keeps ``widths[conv]`` filters.

    Removes the same indices as :func:`pruning_lib.surgery.with_widths` (the last
    ``n - widths[conv]`` filters), through Torch-Pruning's dependency graph, so both libraries compute the
    same function from the same weights.
    """
    import torch_pruning as tp

    model = copy.deepcopy(template).eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    modules = dict(model.named_modules())
    for name, keep in widths.items():
        n = modules[name].out_channels
        if keep < n:
            graph.get_pruning_group(modules[name], tp.prune_conv_out_channels, idxs=list(range(keep, n))).prune()
    return model


def compare_with_torch_pruning(
    template: nn.Module,
    widths: Mapping[str, int],
    input_shape: Sequence[int],
    *,
    forms: Sequence[str] = ("eager", "deploy"),
    num_threads: int = 1,
    min_run_time: float = 0.3,
    rounds: int = 5,
    trained: nn.Module | None = None,
) -> dict[str, Any]:
    """Build the architecture with our surgery and with Torch-Pruning; compare widths, outputs and measure.

    Returns ``same_widths``, ``same_shapes`` (every state_dict tensor), ``max_abs_output_diff`` (on one
    random batch of `input_shape`), ``params``, and per form ``latency_ms`` of each (median over
    `rounds` interleaved measurements) and ``tp_over_ours`` (1.0 means the same speed).  With
    `trained` (a model of the same widths with trained weights, e.g. notebook 03's), it is timed too
    (``trained_over_ours``): the weights' values should not change the speed of a dense conv.
    """
    shape = tuple(input_shape)
    ours = with_widths(template, widths).eval()
    theirs = torch_pruning_same_widths(template, widths, torch.randn(1, *shape[1:])).eval()
    so, st = ours.state_dict(), theirs.state_dict()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = float((ours(x) - theirs(x)).abs().max())
    result: dict[str, Any] = {
        "widths": dict(widths),
        "same_widths": group_widths(theirs) == group_widths(ours),
        "same_shapes": so.keys() == st.keys() and all(so[k].shape == st[k].shape for k in so),
        "max_abs_output_diff": diff,
        "params": {"ours": measure.count_parameters(ours), "torch_pruning": measure.count_parameters(theirs)},
        "input_shape": list(shape), "num_threads": num_threads, "forms": {},
    }
    for form in forms:
        contenders = [("ours", ours), ("torch_pruning", theirs)] + ([("trained", trained)] if trained is not None else [])
        times: dict[str, list[float]] = {k: [] for k, _ in contenders}
        for _ in range(rounds):
            for key, m in contenders:
                times[key].append(measure.measure_latency(m, shape, num_threads=num_threads, min_run_time=min_run_time,
                                                        form=form)["median_ms"])
        med = {k: statistics.median(v) for k, v in times.items()}
        result["forms"][form] = {"latency_ms": med, "tp_over_ours": med["torch_pruning"] / med["ours"],
                                 "spread_ms": {k: [min(v), max(v)] for k, v in times.items()}}
        if trained is not None:
            result["forms"][form]["trained_over_ours"] = med["trained"] / med["ours"]
    return result


# --------------------------------------------------------------------------- the notebook's figures


def side_by_side_all(nets: Mapping[str, nn.Module], image_shape: Sequence[int], *, threads: Sequence[int],
                     batches: Sequence[int], forms: Sequence[str], accuracy: Mapping[str, float],
                     rounds: int, min_run_time: float) -> pd.DataFrame:
    """`measure.side_by_side` for each thread count; one table with a ``threads`` column."""
    frames = [measure.side_by_side(nets, image_shape, batches, forms=forms, accuracy=accuracy, num_threads=t,
                                 min_run_time=min_run_time, rounds=rounds).assign(threads=t) for t in threads]
    return pd.concat(frames, ignore_index=True)


def vgg16_seed_setting(kept: Sequence[float], *, remove_fraction: float, multiple_of: int, forms: Sequence[str],
                       num_threads: int, min_run_time: float, rounds: int) -> tuple[pd.DataFrame, dict[str, int]]:
    """VGG16 (random weights, 2-class head) dense vs pruned like notebook 03, at batch 1."""
    torch.manual_seed(0)
    vgg = vgg16(weights=None, num_classes=2).eval()
    widths = transfer_widths(kept, group_widths(vgg), remove_fraction=remove_fraction,
                                   multiple_of=multiple_of)
    nets = {"VGG16": vgg, "VGG16 pruned": with_widths(vgg, widths)}
    table = measure.side_by_side(nets, (3, 224, 224), [1], forms=forms, num_threads=num_threads,
                               min_run_time=min_run_time, rounds=rounds)
    return table, widths


def runtime_table(side: pd.DataFrame, model: str = "taylor") -> pd.DataFrame:
    """One row per (threads, batch, runtime): dense and `model` latency, the speedup and speedup / FLOPs ratio."""
    rows = []
    for (threads, batch, form), g in side.groupby(["threads", "batch", "form"], sort=False):
        g = g.set_index("model")
        rows.append({"threads": threads, "batch": batch, "runtime": form, "dense_ms": g.loc["dense", "latency_ms"],
                     f"{model}_ms": g.loc[model, "latency_ms"], "speedup": g.loc[model, "speedup"],
                     "flops_ratio": g.loc[model, "flops_ratio"], "speedup_per_flops": g.loc[model, "speedup_per_flops"]})
    return pd.DataFrame(rows)


def _print_table(title: str, df: pd.DataFrame, columns: Sequence[str] | None = None) -> None:
    print(f"\n== {title}")
    print((df[list(columns)] if columns else df).round(3).to_string(index=False))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default: 1 and the profile's benchmark batch")
    parser.add_argument("--sweep-batches", type=int, nargs="+", default=None,
                        help="batch sizes of the batch sweep (default: 1 4 16 B 4B, B = the benchmark batch)")
    parser.add_argument("--forms", nargs="+", default=None, choices=measure.FORMS + measure.RUNTIMES,
                        help="default: eager, deploy and every runtime installed here (onnxruntime, openvino)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-run-time", type=float, default=0.3)
    parser.add_argument("--skip-sweep", action="store_true", help="skip the per-iteration and batch sweeps")
    parser.add_argument("--skip-vgg16", action="store_true")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc as it is (default: measure.keep_freed_memory(), as in notebook 04)")
    parser.add_argument("--out-dir", type=Path, default=Path("build"))
    args = parser.parse_args(argv)

    P = get_profile(args.profile)
    available = measure.available_runtimes()
    args.forms = args.forms or ["eager", "deploy", *(r for r, why in available.items() if why is None)]
    for runtime, why in available.items():
        if why and runtime in (args.forms or []):
            sys.exit(f"--forms {runtime}: {why}")
        if why:
            print(f"{runtime}: skipped ({why})")
    torch_forms = [f for f in args.forms if f in measure.FORMS]      # the sweeps, VGG16 and Torch-Pruning: PyTorch
    batch = P.benchmark_batch
    batches = args.batches or [1, batch]
    sweep_batches = args.sweep_batches or [1, 4, 16, batch, 4 * batch]
    kept_memory = False if args.default_malloc else measure.keep_freed_memory()
    machine = measure.machine_info()
    print("machine:", json.dumps(machine))
    print(f"profile={P.name}  threads={args.threads}  batches={batches}  sweep batches={sweep_batches}  "
          f"forms={args.forms}  rounds={args.rounds}  min_run_time={args.min_run_time}s  "
          f"freed memory kept (measure.keep_freed_memory): {kept_memory}")

    try:
        histories = reports.read_iterative_report()
        pruned, meta = {}, {}
        for c in ("taylor", "random"):
            pruned[c], meta[c] = experiment.load_pruned_model(c, P)
    except FileNotFoundError as e:
        sys.exit(f"{e}\n(bench_speed.py measures notebook 03's pruned models: run `make demo` first)")
    dense = experiment.load_baseline(P, progress=False)
    nets = {"dense": dense.cpu(), **{k: m.cpu() for k, m in pruned.items()}}
    accuracy = {"dense": evaluate(nets["dense"], experiment.target_loaders(P)["test"])["accuracy"],
                **{c: meta[c]["accuracy"] for c in pruned}}
    report: dict[str, Any] = {"machine": machine, "profile": P.name, "threads": args.threads, "batches": batches,
                              "forms": args.forms, "rounds": args.rounds, "min_run_time_s": args.min_run_time,
                              "keep_freed_memory": kept_memory}
    tables: dict[str, pd.DataFrame] = {}

    tables["side_by_side"] = side_by_side_all(nets, P.input_shape, threads=args.threads, batches=batches,
                                              forms=args.forms, accuracy=accuracy, rounds=args.rounds,
                                              min_run_time=args.min_run_time)
    _print_table("dense vs pruned (latency: ms per batch; ratios: dense / model)", tables["side_by_side"],
                 ["threads", "form", "batch", "model", "params", "size_mb", "gflops", "accuracy", "latency_ms",
                  "latency_iqr_ms", "throughput", "speedup", "flops_ratio", "speedup_per_flops"])
    tables["runtimes"] = runtime_table(tables["side_by_side"])
    _print_table("the Taylor-pruned network in each runtime (speedup against dense in the same runtime; "
                 "target: onnxruntime >= 0.8 x the FLOPs ratio at the benchmark batch, 1 thread)", tables["runtimes"])

    if not args.skip_sweep:
        t0 = args.threads[0]
        tables["sweep"] = speedup_sweep(experiment.architecture(P), {c: histories[c] for c in pruned},
                                              (batch, *P.input_shape), forms=torch_forms, num_threads=t0,
                                              min_run_time=args.min_run_time / 2, rounds=max(1, args.rounds // 2))
        _print_table(f"speedup vs FLOPs, every iteration of notebook 03 (batch {batch}, {t0} thread)", tables["sweep"],
                     ["form", "criterion", "iteration", "flops_ratio", "latency_ms", "speedup", "speedup_per_flops"])
        tables["batches"] = measure.batch_sweep(nets, P.input_shape, sweep_batches, forms=args.forms, num_threads=t0,
                                              min_run_time=args.min_run_time / 2, rounds=max(1, args.rounds // 2))
        _print_table(f"by batch size ({t0} thread)", tables["batches"],
                     ["form", "batch", "model", "latency_ms", "throughput", "speedup", "speedup_per_flops"])

    widths_hist = history_widths(histories["taylor"])
    kept = [widths_hist[-1][c] / widths_hist[0][c] for c in widths_hist[0]]
    if not args.skip_vgg16:
        tables["vgg16"], vgg_widths = vgg16_seed_setting(
            kept, remove_fraction=P.target_fraction, multiple_of=P.multiple_of, forms=torch_forms,
            num_threads=args.threads[0], min_run_time=args.min_run_time, rounds=max(1, args.rounds // 2))
        report["vgg16_widths"] = vgg_widths
        _print_table(f"VGG16, the seed's setting (batch 1, {args.threads[0]} thread)", tables["vgg16"],
                     ["form", "model", "params", "size_mb", "gflops", "latency_ms", "speedup", "flops_ratio",
                      "size_ratio"])

    same = group_widths(nets["taylor"]) == widths_hist[-1]
    if not same:
        print("note: notebook 03's Taylor model and the last row of iterative.json have different widths "
              "(re-run notebook 03); the trained model is not timed against the rebuilt one")
    tp_result = compare_with_torch_pruning(experiment.architecture(P), widths_hist[-1], (batch, *P.input_shape),
                                           forms=torch_forms, num_threads=args.threads[0],
                                           min_run_time=args.min_run_time, rounds=args.rounds,
                                           trained=nets["taylor"] if same else None)
    report["torch_pruning"] = tp_result
    tables["torch_pruning"] = pd.DataFrame([{"form": f, "ours_ms": r["latency_ms"]["ours"],
                                             "torch_pruning_ms": r["latency_ms"]["torch_pruning"],
                                             "tp_over_ours": r["tp_over_ours"],
                                             "trained_notebook03_ms": r["latency_ms"].get("trained"),
                                             "trained_over_ours": r.get("trained_over_ours")}
                                            for f, r in tp_result["forms"].items()])
    print(f"\n== the Taylor architecture built by our surgery (random weights), by Torch-Pruning (same indices "
          f"removed), and notebook 03's trained model (batch {batch}, {args.threads[0]} thread)")
    print(f"same widths: {tp_result['same_widths']}  same tensor shapes: {tp_result['same_shapes']}  "
          f"max |output difference|: {tp_result['max_abs_output_diff']:.2e}")
    print(tables["torch_pruning"].round(3).to_string(index=False))

    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        df.to_csv(args.out_dir / f"bench_speed_{name}.csv", index=False)
        report[name] = df.to_dict(orient="records")
    out = args.out_dir / "bench_speed.json"
    out.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"\nwrote {out} and {', '.join(f'bench_speed_{n}.csv' for n in tables)} in {args.out_dir}/")
    return report


if __name__ == "__main__":
    main()
