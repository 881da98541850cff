"""Tests for the comparisons and per-layer timing of pruning_lib.measure (notebook 04), the deployment forms,
the reports of notebook 04 and benchmarks/bench_speed.py's core function.  Tiny models, short timings: behaviour, not speed."""
import copy
import json
import math
import platform
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from pruning_lib import measure, models
from pruning_lib.course import demo, reports
from pruning_lib.graph.groups import group_widths
from pruning_lib.recover.history import history_widths, speedup_sweep
from pruning_lib.plan import transfer_widths
from pruning_lib.surgery import with_widths

from conftest import benchmark_module

FAST = 0.02  # min_run_time (s)
SHAPE = (1, 8, 8)  # one image of the tiny model
WIDTHS = (16, "M", 32, "M", 16)


def tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = models.small_vgg(WIDTHS, in_channels=1, num_classes=2).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics, so folding is really tested
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


def fake_report(tmp_path: Path) -> Path:
    """An iterative.json in notebook 03's format, for the tiny model (a test fixture, not a result)."""
    convs = list(group_widths(tiny()))
    rows = {"taylor": [(16, 32, 16), (16, 16, 16), (8, 16, 8)], "random": [(16, 32, 16), (8, 32, 8)]}
    payload = {c: [{"iteration": i, "fraction_removed": 1 - sum(w) / 64, "gflops": 0.0, "params": 0,
                    "accuracy_after_finetune": 0.9, "filters": dict(zip(convs, w))} for i, w in enumerate(ws)]
               for c, ws in rows.items()}
    path = tmp_path / "iterative.json"
    path.write_text(json.dumps(payload))
    return path


# --------------------------------------------------------------------------- bench: deployment forms


def test_fold_batchnorm_computes_the_same_function_and_leaves_the_model_alone():
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = measure.fold_batchnorm(model)
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.Identity) for m in folded.modules()) == 3
    assert all(m.bias is not None for m in folded.modules() if isinstance(m, nn.Conv2d))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # original untouched


class Branchy(nn.Module):
    """conv -> bn, but the conv's output is also read elsewhere: folding would change that reader."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_fold_batchnorm_skips_a_conv_with_other_readers():
    model = Branchy().eval()
    model.bn.running_mean.fill_(0.3)
    folded = measure.fold_batchnorm(model)
    assert isinstance(folded.bn, nn.BatchNorm2d)
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x))


@pytest.mark.parametrize("form", measure.FORMS)
def test_every_form_computes_the_same_function(form):
    model = tiny()
    runner = measure.deployment_form(model, form)
    assert (runner is model) == (form == "eager")
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(runner(x), model(x), atol=1e-5, rtol=1e-5)


def test_unknown_form_is_named():
    with pytest.raises(ValueError, match="'fast'"):
        measure.deployment_form(tiny(), "fast")
    with pytest.raises(ValueError, match="'fast'"):
        measure.measure_latency(tiny(), (1, *SHAPE), form="fast", min_run_time=FAST, num_threads=1)


def test_measure_latency_and_compare_in_a_form_keep_the_models_measures():
    model = tiny().train()
    r = measure.measure_latency(model, (2, *SHAPE), form="deploy", min_run_time=FAST, num_threads=1)
    assert r["form"] == "deploy" and r["median_ms"] > 0
    assert model.training and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    df = measure.compare({"a": model, "b": tiny(1)}, (2, *SHAPE), form="deploy", min_run_time=FAST, num_threads=1)
    assert df.loc["a", "params"] == measure.count_parameters(model)  # BatchNorm still counted: not the folded copy


def test_page_faults_reports_time_and_faults_per_pass():
    model = tiny().train()
    r = measure.page_faults(model, (2, *SHAPE), runs=3, warmup=1, num_threads=1, form="deploy")
    assert r["ms_per_pass"] > 0 and (r["faults_per_pass"] >= 0 or math.isnan(r["faults_per_pass"]))
    assert model.training


def test_keep_freed_memory_stops_page_faults_in_a_fresh_process():
    """Run in a subprocess: the setting is process-wide and one-way."""
    if platform.system() != "Linux":
        pytest.skip("glibc only")
    import resource

    code = ("import torch, resource; from pruning_lib import measure\n"
            "def faults():\n"
            "    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "    for _ in range(20):\n"
            "        t = torch.empty(8 << 20); t.fill_(1.0); del t\n"  # 32 MB, mmap-sized by default
            "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0\n"
            "faults(); before = faults(); ok = measure.keep_freed_memory(); faults(); after = faults()\n"
            "print(ok, before, after)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    ok, before, after = out[0] == "True", int(out[1]), int(out[2])
    pages = (32 << 20) // resource.getpagesize()  # faults to touch one 32 MB block
    # by default nearly every one of the 20 blocks is faulted in afresh; once freed memory is kept,
    # the block is reused: at most one block's worth of faults in all 20 allocations
    assert ok and before >= 15 * pages and after <= pages


# --------------------------------------------------------------------------- notebook 03's report, widths


def test_read_iterative_report_and_history_widths(tmp_path):
    histories = reports.read_iterative_report(fake_report(tmp_path))
    assert set(histories) == {"taylor", "random"}
    h = histories["taylor"]
    assert [c for c in h.columns if c.startswith("filters:")] == [f"filters:{c}" for c in group_widths(tiny())]
    widths = history_widths(h)
    assert len(widths) == 3 and list(widths[2].values()) == [8, 16, 8]


def test_missing_report_says_run_notebook_03(tmp_path):
    with pytest.raises(FileNotFoundError, match="03_iterative_pruning"):
        reports.read_iterative_report(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"taylor": [{"iteration": 0}]}))
    with pytest.raises(ValueError, match="filters"):
        reports.read_iterative_report(bad)


def test_architecture_from_widths_gives_the_widths_and_keeps_the_template():
    template = tiny()
    convs = list(group_widths(template))
    widths = {convs[0]: 5, convs[1]: 32, convs[2]: 1}
    model = with_widths(template, widths)
    assert group_widths(model) == widths
    assert group_widths(template) == dict(zip(convs, (16, 32, 16)))
    assert model(torch.randn(2, *SHAPE)).shape == (2, 2)
    # the first filters are kept: the first conv's weights are the template's first 5 rows
    assert torch.equal(model.get_submodule(convs[0]).weight, template.get_submodule(convs[0]).weight[:5])


@pytest.mark.parametrize("widths, match", [({"nope": 3}, "nope"), ({"features.0": 0}, "keep 1..16"),
                                           ({"features.0": 17}, "keep 1..16")])
def test_architecture_from_widths_rejects_bad_widths(widths, match):
    with pytest.raises(ValueError, match=match):
        with_widths(tiny(), widths)


# --------------------------------------------------------------------------- timing tables


def test_layer_times_one_row_per_layer_in_execution_order():
    model = tiny().train()
    leaves = [n for n, m in model.named_modules() if n and next(m.children(), None) is None]
    for form in ("eager", "deploy"):
        df = measure.layer_times(model, (2, *SHAPE), form=form, repeats=3, warmup=1, num_threads=1)
        assert list(df["module"]) == leaves + ["(outside modules)"]  # names of the model, whatever the form
        assert (df["time_ms"] >= 0).all()
        # the rest is the median total minus the layers' medians, clipped at 0: exact properties of the table
        total = (df["time_ms"] / df["share"])[df["share"] > 0].median()
        layers = df["time_ms"].iloc[:-1].sum()
        assert df["time_ms"].iloc[-1] == pytest.approx(max(total - layers, 0.0))
        assert df["share"].sum() == pytest.approx(max(1.0, layers / total))
    types = measure.layer_times(model, (2, *SHAPE), form="deploy", repeats=2, include_rest=False, num_threads=1)["type"]
    assert "BatchNorm2d" not in set(types) and "Identity" in set(types)
    assert model.training  # flags restored
    assert not model._forward_hooks and not model.features[0]._forward_pre_hooks  # hooks removed


def test_per_layer_table_counts_match_bench():
    model = tiny()
    df = measure.per_layer_table(model, (2, *SHAPE), repeats=2, num_threads=1)
    counted = measure.flops_per_layer(model, (2, *SHAPE)).set_index("module")["flops"]
    assert df.set_index("module")["flops"].loc[counted.index].tolist() == counted.tolist()
    assert df["% FLOPs"].sum() == pytest.approx(100) and df["% params"].sum() == pytest.approx(100)
    by_type = measure.time_by_type(df)
    assert by_type.sum() == pytest.approx(df["time_ms"].sum())
    gap = measure.explain_gap({"dense": df, "pruned": df})
    assert gap.loc["dense", "flop_layers_ms"] + gap.loc["dense", "other_ms"] == pytest.approx(df["time_ms"].sum())
    assert gap.loc["dense", "gflops"] == pytest.approx(counted.sum() / 1e9)


def test_per_layer_tables_one_table_per_model_and_form():
    nets = {"dense": tiny(), "pruned": with_widths(tiny(), {"features.4": 8})}
    tables = measure.per_layer_tables(nets, (2, *SHAPE), forms=("eager", "deploy"), rounds=2, repeats=2, num_threads=1)
    assert list(tables) == ["dense, eager", "dense, deploy", "pruned, eager", "pruned, deploy"]
    for t in tables.values():
        assert t["% time"].sum() == pytest.approx(100)
        assert list(t["module"]) == list(tables["dense, eager"]["module"])
    with pytest.raises(ValueError, match="rounds"):
        measure.per_layer_tables(nets, (2, *SHAPE), rounds=0)


def test_side_by_side_one_row_per_form_batch_model():
    nets = {"dense": tiny(), "pruned": with_widths(tiny(), {"features.4": 8})}
    df = measure.side_by_side(nets, SHAPE, [1, 4], forms=("eager", "deploy"), accuracy={"dense": 0.9, "pruned": 0.8},
                            min_run_time=0.005, num_threads=1, rounds=2)
    assert len(df) == 2 * 2 * 2
    assert list(df[["form", "batch", "model"]].itertuples(index=False, name=None))[:3] == [
        ("eager", 1, "dense"), ("eager", 1, "pruned"), ("eager", 4, "dense")]
    dense = df[df["model"] == "dense"]
    assert (dense["speedup"] == 1.0).all() and (dense["flops_ratio"] == 1.0).all()
    pruned = df[df["model"] == "pruned"].iloc[0]
    assert pruned["flops_ratio"] > 1 and pruned["accuracy"] == 0.8
    assert pruned["speedup_per_flops"] == pytest.approx(pruned["speedup"] / pruned["flops_ratio"])
    assert df["throughput"].tolist() == pytest.approx((df["batch"] / (df["latency_ms"] / 1e3)).tolist())
    assert (df["speedup_min"] <= df["speedup_max"]).all() and (dense["speedup_min"] == 1.0).all()


def test_side_by_side_times_a_model_in_the_forms_named_for_it_only():
    nets = {"dense": tiny(), "pruned": with_widths(tiny(), {"features.4": 8}), "zeroed": tiny()}
    df = measure.side_by_side(nets, SHAPE, [2], forms=("eager", "deploy"), forms_of={"zeroed": ("eager",)},
                              min_run_time=0.005, num_threads=1, rounds=1)
    assert sorted(df[df["model"] == "zeroed"]["form"]) == ["eager"]
    assert len(df) == 3 + 2
    with pytest.raises(ValueError, match="reference 'dense'"):
        measure.side_by_side(nets, SHAPE, [2], forms=("eager",), forms_of={"dense": ("eager",)}, rounds=1)
    with pytest.raises(ValueError, match="other"):
        measure.side_by_side(nets, SHAPE, [2], forms=("eager",), forms_of={"ghost": ("eager",)}, rounds=1)


def test_speedup_sweep_rebuilds_every_iteration(tmp_path):
    histories = reports.read_iterative_report(fake_report(tmp_path))
    df = speedup_sweep(tiny(), histories, (2, *SHAPE), forms=("eager",), min_run_time=FAST, num_threads=1)
    assert len(df) == 3 + 2
    first = df[df["iteration"] == 0]
    assert (first["flops_ratio"] == 1.0).all()
    last = df[(df["criterion"] == "taylor") & (df["iteration"] == 2)].iloc[0]
    rebuilt = with_widths(tiny(), history_widths(histories["taylor"])[2])
    assert last["gflops"] == pytest.approx(measure.count_flops(rebuilt, (1, *SHAPE)) / 1e9)
    assert last["flops_ratio"] > 1 and last["batch"] == 2


def test_batch_sweep_rows():
    nets = {"dense": tiny(), "pruned": with_widths(tiny(), {"features.0": 8})}
    df = measure.batch_sweep(nets, SHAPE, [1, 3], forms=("deploy",), min_run_time=FAST, num_threads=1)
    assert len(df) == 4 and set(df["batch"]) == {1, 3}
    assert df["ms_per_image"].tolist() == pytest.approx((df["latency_ms"] / df["batch"]).tolist())


# --------------------------------------------------------------------------- VGG16 setting helpers


def test_transfer_widths_hits_the_fraction_in_blocks():
    target = {f"c{i}": w for i, w in enumerate([64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512])}
    kept = [1.0, 0.5, 0.75, 0.5, 0.375, 0.25, 0.3125]
    widths = transfer_widths(kept, target, remove_fraction=0.6, multiple_of=16)
    assert list(widths) == list(target)
    assert all(w % 16 == 0 and 16 <= w <= target[n] for n, w in widths.items())
    removed = 1 - sum(widths.values()) / sum(target.values())
    assert abs(removed - 0.6) <= 16 / sum(target.values()) * 1.01  # within one block
    assert widths["c0"] == 64  # the source kept all of its first layer


def test_transfer_widths_uniform_source_prunes_uniformly():
    widths = transfer_widths([1.0, 1.0], {"a": 100, "b": 200}, remove_fraction=0.5)
    assert widths == {"a": 50, "b": 100}
    with pytest.raises(ValueError, match="remove_fraction"):
        transfer_widths([1.0], {"a": 4}, remove_fraction=1.0)


def test_first_linear_shrinks_with_the_last_conv():
    model = models.small_vgg((8, "M", 16), in_channels=1, num_classes=3)
    pruned = with_widths(model, {"features.4": 5})
    name, fc = models.first_linear(pruned)
    assert name == "classifier.0" and fc.in_features == 5
    with pytest.raises(ValueError, match="no nn.Linear"):
        models.first_linear(nn.Conv2d(1, 1, 1))


# --------------------------------------------------------------------------- targets and summary.json


@pytest.fixture(scope="module")
def summary_once() -> dict:
    """summary.json from a tiny run: side_by_side on a tiny dense and pruned model."""
    nets = {"dense": tiny(), "taylor": with_widths(tiny(), {"features.4": 8})}
    table = measure.side_by_side(nets, SHAPE, [4], forms=("deploy",), accuracy={"dense": 0.9, "taylor": 0.88},
                               min_run_time=FAST, num_threads=1, rounds=1).set_index("model")
    return reports.build_summary("quick", "fashion-mnist", "small_vgg", table,
                               measurement={"batch_size": 4, "num_threads": 1, "form": "deploy"})


@pytest.fixture
def tiny_summary(summary_once) -> dict:
    return copy.deepcopy(summary_once)


def test_summary_from_a_tiny_run_has_the_schema(tiny_summary, tmp_path, monkeypatch):
    summary = tiny_summary
    assert set(summary) == {"profile", "dataset", "model", "dense", "pruned", "measurement"}
    assert set(summary["dense"]) == {"accuracy", "gflops", "params", "size_mb", "latency_ms"}
    assert set(summary["pruned"]) == {"taylor"}
    assert set(summary["pruned"]["taylor"]) == {"accuracy", "gflops", "params", "size_mb", "latency_ms", "speedup"}
    assert summary["pruned"]["taylor"]["accuracy"] == 0.88 and isinstance(summary["dense"]["params"], int)
    t = summary["pruned"]["taylor"]
    assert t["speedup"] == pytest.approx(summary["dense"]["latency_ms"] / t["latency_ms"])
    monkeypatch.setenv("PRUNING_REPORTS_DIR", str(tmp_path))
    path = reports.write_summary(summary)
    assert path == tmp_path / "summary.json"
    assert json.loads(path.read_text()) == json.loads(json.dumps(summary))
    lines = demo.summary_lines()  # what make demo prints
    assert lines[0].startswith("profile=quick") and lines[2].startswith("dense") and lines[3].startswith("taylor")


@pytest.mark.parametrize("change, match", [
    (lambda s: s.pop("dataset"), "missing \\['dataset'\\]"),
    (lambda s: s["dense"].pop("latency_ms"), "dense.*missing \\['latency_ms'\\]"),
    (lambda s: s["pruned"]["taylor"].pop("speedup"), "missing \\['speedup'\\]"),
    (lambda s: s["dense"].update(accuracy=86.4), "fraction"),
    (lambda s: s["pruned"]["taylor"].update(latency_ms=math.nan), "latency_ms"),
    (lambda s: s["dense"].update(params=1.5), "params.*int"),
    (lambda s: s["pruned"]["taylor"].update(speedup=0.0), "speedup"),
    (lambda s: s.update(pruned={}), "at least one"),
    (lambda s: s.update(profile=""), "profile"),
])
def test_validator_rejects_bad_summaries(tiny_summary, change, match):
    summary = tiny_summary
    change(summary)
    with pytest.raises(ValueError, match=match):
        reports.validate_summary(summary)


# --------------------------------------------------------------------------- benchmarks/bench_speed.py


def test_bench_speed_torch_pruning_builds_the_same_architecture():
    pytest.importorskip("torch_pruning")
    bs = benchmark_module("bench_speed")
    widths = {"features.0": 8, "features.4": 16, "features.8": 4}
    trained = with_widths(tiny(1), widths)
    r = bs.compare_with_torch_pruning(tiny(), widths, (2, *SHAPE), forms=("eager", "deploy"), min_run_time=FAST, num_threads=1,
                                      rounds=1, trained=trained)
    assert r["same_widths"] and r["same_shapes"]
    assert r["max_abs_output_diff"] < 1e-5  # the same filters removed from the same weights: the same function
    assert r["params"]["ours"] == r["params"]["torch_pruning"]
    for form in ("eager", "deploy"):
        assert r["forms"][form]["tp_over_ours"] > 0 and r["forms"][form]["trained_over_ours"] > 0


def _side_by_side_rows():
    import pandas as pd

    rows = []
    for form in ("eager", "deploy", "onnxruntime"):
        for batch in (1, 64):
            for model, ms, flops in (("dense", 4.0, 0.06), ("taylor", 1.0, 0.012), ("random", 2.0, 0.01)):
                dense_ms = 4.0 * batch
                rows.append({"form": form, "batch": batch, "model": model, "accuracy": 0.8, "params": 100,
                             "gflops": flops, "size_mb": 1.0, "latency_ms": ms * batch, "flops_ratio": 0.06 / flops,
                             "params_ratio": 1.0, "speedup": dense_ms / (ms * batch),
                             "speedup_min": 0.9 * dense_ms / (ms * batch), "speedup_max": 1.1 * dense_ms / (ms * batch),
                             "speedup_per_flops": dense_ms / (ms * batch) / (0.06 / flops)})
    return pd.DataFrame(rows)


def test_speedup_overview_reads_one_form_and_batch_and_every_speedup():
    overview = measure.speedup_overview(_side_by_side_rows(), form="deploy", batch=64, forms=("eager", "deploy"))
    assert list(overview.index) == ["dense", "taylor", "random"]
    assert overview.loc["taylor", "MFLOPs"] == pytest.approx(12.0)
    assert overview.loc["taylor", "ms / batch of 64, deploy"] == 64.0
    assert overview.loc["taylor", "spread of the speedup, deploy, batch 64"] == "3.60–4.40"
    speedups = [c for c in overview.columns if c.startswith("speedup, ")]
    assert speedups == ["speedup, eager, batch 1", "speedup, eager, batch 64", "speedup, deploy, batch 1",
                        "speedup, deploy, batch 64"]                               # onnxruntime is not among `forms`
    assert overview.loc["random", "speedup, eager, batch 1"] == 2.0


def test_runtime_overview_has_a_row_per_batch_and_form():
    overview = measure.runtime_overview(_side_by_side_rows(), ["dense", "taylor"])
    assert list(overview.columns) == ["dense ms", "taylor ms", "taylor speedup", "taylor speedup / FLOPs ratio"]
    assert len(overview) == 6 and overview.loc[(64, "onnxruntime"), "taylor speedup"] == 4.0
    assert overview.loc[(1, "eager"), "taylor speedup / FLOPs ratio"] == pytest.approx(4.0 / 5.0)
