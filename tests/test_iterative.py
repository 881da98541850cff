"""Tests for pruning_lib.recover.iterative: the Prune–Train–Repeat loop, its targets, checkpoints and helpers."""

from __future__ import annotations

import copy
import json
import math

import pandas as pd
import pytest
import torch
from torch import nn

from conftest import SHAPE, loaders, tiny_model
from pruning_lib import measure
from pruning_lib.recover import train
from pruning_lib.recover.distill import KnowledgeDistillation
from pruning_lib.recover.evaluation import evaluate
from pruning_lib.surgery import load_pruned
from pruning_lib.graph.groups import group_widths
from pruning_lib.course.reports import history_records, write_iterative_json
from pruning_lib.recover.history import compare_at_flops, layer_widths
from pruning_lib.recover.iterative import (
    HISTORY_COLUMNS,
    CheckpointMismatchError,
    PruningSchedule,
    fingerprint,
    prune_train_repeat,
)
from pruning_lib.models import scratch_model, small_vgg
from pruning_lib.plan import flops_per_channel, regularised_scores
from pruning_lib.surgery import prune_filters

@pytest.fixture(scope="module")
def baseline() -> nn.Module:
    model = tiny_model()
    train_dl, _ = loaders()
    train.fit(model, train_dl, steps=40, lr=1e-2, progress=False)
    return model.eval()


def schedule(**kw) -> PruningSchedule:
    defaults = dict(criterion="taylor", filters_per_iteration=3, finetune_steps=3, lr=1e-3, rank_batches=2,
                    target_fraction=0.6, seed=0)
    return PruningSchedule(**{**defaults, **kw})


def run(model, sched, **kw):
    train_dl, val_dl = loaders()
    return prune_train_repeat(model, train_dl, val_dl, sched, input_shape=SHAPE, progress=False, **kw)


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


def comparable(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop(columns=["time_s"]).reset_index(drop=True)


# ---------------------------------------------------------------- the loop
def test_flops_never_increase_and_history_is_complete(baseline):
    before = fingerprint(baseline)
    pruned, h = run(baseline, schedule())
    assert fingerprint(baseline) == before, "the starting model must be left unchanged"
    total = sum(group_widths(baseline).values())                            # 28: 4 + 8 + 8 filters, 8 hidden units
    assert list(h["iteration"]) == list(range(len(h))) and len(h) == 1 + math.ceil(round(0.6 * total) / 3)
    assert set(HISTORY_COLUMNS) <= set(h.columns)
    layer_cols = [c for c in h.columns if c.startswith("filters:")]
    assert [c.removeprefix("filters:") for c in layer_cols] == list(group_widths(baseline))
    assert not h[list(HISTORY_COLUMNS)].isna().any().any()
    assert (h["gflops"].diff().dropna() < 0).all(), "every iteration removes FLOPs"
    assert (h["params"].diff().dropna() < 0).all()
    assert (h[layer_cols].sum(axis=1) == total - h["filters_removed"]).all()
    assert h["filters_removed"].iloc[-1] == round(0.6 * total)
    assert h["fraction_removed"].iloc[-1] == pytest.approx(round(0.6 * total) / total)
    assert (h["finetune_steps"].iloc[1:] == 3).all() and h["finetune_steps"].iloc[0] == 0
    assert h["accuracy_before_finetune"].between(0, 1).all() and h["accuracy_after_finetune"].between(0, 1).all()
    # the last row describes the returned model
    assert group_widths(pruned) == {c.removeprefix("filters:"): h[c].iloc[-1] for c in layer_cols}
    assert measure.count_flops(pruned, (1, *SHAPE)) / 1e9 == pytest.approx(h["gflops"].iloc[-1])
    assert measure.count_parameters(pruned) == h["params"].iloc[-1]
    _, val_dl = loaders()
    assert evaluate(pruned, val_dl)["accuracy"] == h["accuracy_after_finetune"].iloc[-1]
    assert h.attrs["model_iteration"] == h["iteration"].iloc[-1]


@pytest.mark.parametrize("min_keep", [1, 2])
def test_no_layer_is_emptied(baseline, min_keep):
    pruned, h = run(baseline, schedule(filters_per_iteration=7, target_fraction=0.95, finetune_steps=1,
                                       min_keep=min_keep, criterion="random"))
    layer_cols = [c for c in h.columns if c.startswith("filters:")]
    assert (h[layer_cols] >= min_keep).all().all()
    assert h[layer_cols].iloc[-1].sum() == len(layer_cols) * min_keep, "it prunes down to the floor, then stops"
    assert pruned(torch.randn(2, *SHAPE)).shape == (2, 3)


def test_callbacks_see_every_iteration(baseline):
    seen = []

    class Spy(train.Callback):
        def on_start(self, history, model):
            seen.append(("start", len(history)))

        def on_prune(self, row, model):
            assert math.isnan(row["accuracy_after_finetune"])
            seen.append(("prune", row["iteration"]))

        def on_step(self, step, loss, model):
            seen.append(("step", step))

        def on_iteration(self, row, model):
            seen.append(("iteration", row["iteration"]))

    _, h = run(baseline, schedule(target_fraction=0.3), callbacks=[Spy()])
    assert len(h) == 1 + math.ceil(round(0.3 * sum(group_widths(baseline).values())) / 3)
    each = [[("prune", i), ("step", 1), ("step", 2), ("step", 3), ("iteration", i)] for i in range(1, len(h))]
    assert seen == [("start", 1), *(event for iteration in each for event in iteration)]


def test_a_callback_can_end_the_run(baseline):
    class StopAtTwo:
        def on_iteration(self, row, model):
            return row["iteration"] == 2

    _, h = run(baseline, schedule(), callbacks=[StopAtTwo()])
    assert list(h["iteration"]) == [0, 1, 2]


# ---------------------------------------------------------------- checkpoints and resuming
class Interrupt(train.Callback):
    """Raises KeyboardInterrupt (as Ctrl-C would) at iteration `at`, in hook `where`."""

    def __init__(self, where: str, at: int = 2):
        self.where, self.at, self.iteration = where, at, 0

    def on_prune(self, row, model):
        self.iteration = row["iteration"]
        if self.where == "on_prune" and self.iteration == self.at:
            raise KeyboardInterrupt

    def on_step(self, step, loss, model):
        if self.where == "on_step" and self.iteration == self.at and step == 2:
            raise KeyboardInterrupt

    def on_iteration(self, row, model):
        if self.where == "on_iteration" and row["iteration"] == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("where, saved", [("on_prune", 1), ("on_step", 1), ("on_iteration", 2)])
@pytest.mark.parametrize("criterion", ["taylor", "random"])
def test_interrupted_run_resumes_to_the_same_state(baseline, tmp_path, where, saved, criterion):
    sched = schedule(criterion=criterion)
    reference, ref_history = run(baseline, sched)
    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        run(baseline, sched, checkpoint=path, callbacks=[Interrupt(where)])
    _, meta = load_pruned(path, tiny_model())
    assert meta["iteration"] == saved, "the checkpoint holds the last complete iteration"
    assert not list(tmp_path.glob("*.tmp")), "no half-written file is left behind"
    pruned, history = run(baseline, sched, checkpoint=path)
    assert same_state(pruned, reference)
    pd.testing.assert_frame_equal(comparable(history), comparable(ref_history))


def test_interrupt_while_writing_the_checkpoint_keeps_the_previous_one(baseline, tmp_path, monkeypatch):
    sched = schedule()
    reference, ref_history = run(baseline, sched)
    path = tmp_path / "run.pt"
    real_save, calls = torch.save, []

    def flaky_save(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 3:        # Ctrl-C in the middle of writing iteration 3
            f.write(b"half a checkpoint")   # the atomic writer hands torch.save an open file
            raise KeyboardInterrupt
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", flaky_save)
    with pytest.raises(KeyboardInterrupt):
        run(baseline, sched, checkpoint=path)
    monkeypatch.setattr(torch, "save", real_save)
    _, meta = load_pruned(path, tiny_model())
    assert meta["iteration"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]
    pruned, history = run(baseline, sched, checkpoint=path)
    assert same_state(pruned, reference)
    pd.testing.assert_frame_equal(comparable(history), comparable(ref_history))


def test_finished_checkpoint_is_returned_without_work(baseline, tmp_path):
    path = tmp_path / "run.pt"
    first, h1 = run(baseline, schedule(), checkpoint=path)
    pruned_calls = []
    again, h2 = run(baseline, schedule(), checkpoint=path,
                    callbacks=[type("Spy", (), {"on_prune": lambda self, r, m: pruned_calls.append(r)})()])
    assert not pruned_calls and same_state(first, again)
    pd.testing.assert_frame_equal(h1, h2)


def test_checkpoints_hold_no_dead_optimizer_state(baseline, tmp_path):
    """Every iteration fine-tunes with a fresh optimizer, so no optimizer state is written (it was, and never read)."""
    from pruning_lib.checkpoints import read_checkpoint

    path = tmp_path / "run.pt"
    run(baseline, schedule(), checkpoint=path)
    payload = read_checkpoint(path)
    assert payload["optimizer"] is None and "optimizer" not in payload["meta"]


def test_resume_refuses_a_checkpoint_from_another_baseline_or_schedule(baseline, tmp_path):
    path = tmp_path / "run.pt"
    run(baseline, schedule(target_fraction=0.3), checkpoint=path)
    other = tiny_model(seed=1)
    with pytest.raises(CheckpointMismatchError, match="another starting model"):
        run(other, schedule(target_fraction=0.3), checkpoint=path)
    with pytest.raises(CheckpointMismatchError, match="another schedule"):
        run(baseline, schedule(target_fraction=0.3, lr=1e-2), checkpoint=path)
    # restart_stale starts over from the new model, and the checkpoint now belongs to it
    pruned, h = run(other, schedule(target_fraction=0.3), checkpoint=path, restart_stale=True)
    fresh, h_fresh = run(other, schedule(target_fraction=0.3))
    assert same_state(pruned, fresh)
    pd.testing.assert_frame_equal(comparable(h), comparable(h_fresh))
    run(other, schedule(target_fraction=0.3), checkpoint=path)       # accepted now


def test_resume_keeps_frozen_layers_frozen(tmp_path):
    model = tiny_model()
    for p in model.features.parameters():
        p.requires_grad_(False)
    path = tmp_path / "run.pt"
    sched = schedule()
    reference, _ = run(model, sched)
    with pytest.raises(KeyboardInterrupt):
        run(model, sched, checkpoint=path, callbacks=[Interrupt("on_iteration")])
    pruned, _ = run(model, sched, checkpoint=path)
    assert not any(p.requires_grad for p in pruned.features.parameters())
    assert same_state(pruned, reference)


# ---------------------------------------------------------------- targets
def test_target_fraction_lands_exactly(baseline):
    _, h = run(baseline, schedule(filters_per_iteration=5, target_fraction=0.45))   # 13 of 28 channels: 5 + 5 + 3
    assert list(h["filters_removed"]) == [0, 5, 10, 13]


def test_target_gflops_stops_at_the_first_iteration_under_budget(baseline):
    start = measure.count_flops(baseline, (1, *SHAPE)) / 1e9
    budget = 0.7 * start
    _, h = run(baseline, schedule(target_fraction=None, target_gflops=budget, criterion="l1"))
    assert h["gflops"].iloc[-1] <= budget < h["gflops"].iloc[-2]


def test_accuracy_floor_returns_the_last_model_above_it(baseline, tmp_path):
    """A callback wrecks the head at iteration 2 (no fine-tuning to repair it): the floor must catch it."""
    kept = {}

    class Wreck:
        def on_prune(self, row, model):
            if row["iteration"] == 2:
                head = model.classifier[-1]
                head.weight.data.zero_()
                head.bias.data.copy_(torch.tensor([5.0, 0.0, 0.0]))    # always class 0: accuracy 1/3

        def on_iteration(self, row, model):
            if row["iteration"] == 1:
                kept["model"] = copy.deepcopy(model)

    sched = schedule(target_fraction=None, min_accuracy=0.5, finetune_steps=0)
    path = tmp_path / "run.pt"
    pruned, h = run(baseline, sched, checkpoint=path, callbacks=[Wreck()])
    assert h["accuracy_after_finetune"].iloc[1] >= 0.5
    assert list(h["iteration"]) == [0, 1, 2] and h["accuracy_after_finetune"].iloc[-1] == pytest.approx(1 / 3)
    assert h.attrs["model_iteration"] == 1
    assert same_state(pruned, kept["model"])
    resumed, h2 = run(baseline, sched, checkpoint=path)
    assert same_state(resumed, kept["model"]) and h2.attrs["model_iteration"] == 1


def test_schedule_validates_its_arguments():
    with pytest.raises(ValueError, match="give a target"):
        PruningSchedule()
    with pytest.raises(ValueError, match="target_fraction"):
        PruningSchedule(target_fraction=1.0)
    with pytest.raises(ValueError, match="min_keep"):
        PruningSchedule(target_fraction=0.5, min_keep=0)
    with pytest.raises(ValueError, match="min_accuracy is the lowest metric to accept, a finite number"):
        PruningSchedule(min_accuracy=float("nan"))
    with pytest.raises(ValueError, match="distill"):
        PruningSchedule(target_fraction=0.5, distill=1.5)


def test_distilling_from_the_starting_model(baseline, monkeypatch):
    """With distill > 0 every fine-tune uses KnowledgeDistillation with the (unchanged) starting model as teacher."""
    seen = []
    real_fit = train.fit

    def spy(model, loader, **kw):
        seen.append(kw.get("loss_fn"))
        return real_fit(model, loader, **kw)

    monkeypatch.setattr(train, "fit", spy)
    before = fingerprint(baseline)
    pruned, h = run(baseline, schedule(distill=0.5, temperature=3.0))
    assert fingerprint(baseline) == before
    assert len(seen) == len(h) - 1 and all(isinstance(f, KnowledgeDistillation) for f in seen)
    assert all(f.teacher is baseline and f.alpha == 0.5 and f.temperature == 3.0 for f in seen)
    plain, _ = run(baseline, schedule())
    assert not same_state(pruned, plain), "distillation should change the fine-tuned weights"


# ---------------------------------------------------------------- the FLOPs regularisation
@pytest.mark.parametrize("build", [tiny_model, lambda: __import__("torchvision").models.mobilenet_v2(num_classes=3)],
                         ids=["chain", "mobilenet_v2"])
def test_flops_per_channel_is_what_removing_one_channel_saves(build):
    model = build().eval()
    shape = SHAPE if isinstance(model, type(tiny_model())) else (3, 32, 32)
    cost = flops_per_channel(model, shape)
    start = measure.count_flops(model, (1, *shape))
    for name in group_widths(model):
        smaller = prune_filters(copy.deepcopy(model), {name: [0]})
        assert (start - measure.count_flops(smaller, (1, *shape))) / 1e9 == pytest.approx(cost[name])


def test_regularised_scores_subtract_the_relative_cost():
    scores = {"a": torch.tensor([0.6, 0.8]), "b": torch.tensor([0.6, 0.8])}
    out = regularised_scores(scores, {"a": 2.0, "b": 1.0}, lam=0.5)
    assert torch.allclose(out["a"], torch.tensor([0.1, 0.3])) and torch.allclose(out["b"], torch.tensor([0.35, 0.55]))
    assert regularised_scores(scores, {"a": 2.0, "b": 1.0}, lam=0.0)["a"] is scores["a"]


def test_the_flops_regulariser_shifts_pruning_toward_costly_layers(baseline):
    cost = flops_per_channel(baseline, SHAPE)
    costly = max(cost, key=cost.get)
    plain = run(baseline, schedule(target_fraction=0.3, flops_lambda=0.0, finetune_steps=0))[1]
    regular = run(baseline, schedule(target_fraction=0.3, flops_lambda=5.0, finetune_steps=0))[1]
    assert regular["filters_removed"].iloc[-1] == plain["filters_removed"].iloc[-1]
    assert regular[f"filters:{costly}"].iloc[-1] < plain[f"filters:{costly}"].iloc[-1]
    assert regular["gflops"].iloc[-1] < plain["gflops"].iloc[-1]


# ---------------------------------------------------------------- after the loop
def test_layer_widths_and_compare_at_flops(baseline):
    _, h = run(baseline, schedule(target_fraction=0.3))
    rel = layer_widths(h)
    assert list(rel.index) == list(group_widths(baseline)) and list(rel.columns) == list(h["iteration"])
    assert (rel.iloc[:, 0] == 1).all() and (rel.to_numpy() <= 1).all()
    assert (layer_widths(h, relative=False).iloc[:, 0] == [4, 8, 8, 8]).all()
    g = h["gflops"]
    table = compare_at_flops({"a": h}, [g.iloc[1], (g.iloc[1] + g.iloc[2]) / 2, g.iloc[-1] / 2])
    acc = h["accuracy_after_finetune"]
    assert table["accuracy"].iloc[0] == pytest.approx(acc.iloc[1])
    assert table["accuracy"].iloc[1] == pytest.approx((acc.iloc[1] + acc.iloc[2]) / 2)
    assert math.isnan(table["accuracy"].iloc[2]), "no extrapolation beyond the run"


def test_report_is_strict_json(baseline, tmp_path):
    _, h = run(baseline, schedule(target_fraction=0.3))
    h.loc[1, "accuracy_after_finetune"] = float("nan")
    path = write_iterative_json({"taylor": h}, tmp_path / "iterative.json")
    data = json.loads(path.read_text())           # strict: NaN would not be valid JSON
    records = data["taylor"]
    assert len(records) == len(h) and records[1]["accuracy_after_finetune"] is None
    for key in ("iteration", "gflops", "params", "accuracy_before_finetune", "accuracy_after_finetune"):
        assert key in records[0]
    assert records[0]["filters"] == group_widths(baseline)
    assert history_records(h)[2]["params"] == h["params"].iloc[2]


def test_scratch_model_has_the_pruned_widths_and_fresh_weights(baseline):
    pruned, _ = run(baseline, schedule(target_fraction=0.3))
    a, b = scratch_model(pruned, tiny_model(), seed=3), scratch_model(pruned, tiny_model(), seed=3)
    assert group_widths(a) == group_widths(pruned)
    assert measure.count_parameters(a) == measure.count_parameters(pruned)
    assert same_state(a, b), "seeded"
    assert not same_state(a, pruned)
    assert not same_state(a, scratch_model(pruned, tiny_model(), seed=4))
    bn = a.features[1]
    assert torch.all(bn.running_var == 1) and torch.all(bn.weight == 1)
    assert a(torch.randn(2, *SHAPE)).shape == (2, 3)
    with pytest.raises(ValueError, match="template"):
        scratch_model(tiny_model(), small_vgg((2, "M", 2, "M", 2), in_channels=1, num_classes=3))


def test_blocks_keep_every_pruned_width_a_multiple(baseline):
    pruned, history = run(baseline, schedule(filters_per_iteration=8, multiple_of=4, target_fraction=0.5))
    widths = group_widths(pruned)
    original = group_widths(baseline)
    assert any(widths[n] < original[n] for n in widths)
    assert all(w % 4 == 0 for w in widths.values()), widths
    # the history counts the filters really removed
    assert history["filters_removed"].iloc[-1] == sum(original.values()) - sum(widths.values())


def test_live_sawtooth_updates_one_display_per_iteration(baseline, monkeypatch):
    import IPython.display

    from pruning_lib.widgets.live import LiveSawtooth

    shown = []

    class Handle:
        def update(self, obj):
            shown.append(("update", obj))

    def fake_display(obj, display_id=False):
        shown.append(("display", obj))
        return Handle()

    monkeypatch.setattr(IPython.display, "display", fake_display)
    live = LiveSawtooth()
    _, h = run(baseline, schedule(target_fraction=0.3), callbacks=[live])
    live.finish(h)
    # drawn at the start, after each iteration, and once more at the end, always in one display
    assert [kind for kind, _ in shown] == ["display"] + ["update"] * (len(h) - 1) + ["update"]
    assert all(isinstance(obj, IPython.display.Image) and obj.data[:4] == b"\x89PNG" for _, obj in shown)


# ---------------------------------------------------------------- hand-edited checkpoints
def _edit_checkpoint(path, change):
    payload = torch.load(path, weights_only=True)
    change(payload["meta"])
    torch.save(payload, path)


@pytest.mark.parametrize("change, words", [
    (lambda m: m.update(history={k: v[:1] for k, v in m["history"].items()}), "model_iteration"),
    (lambda m: m.update(model_iteration=99), "model_iteration=99"),
    (lambda m: m["history"].update(accuracy_after_finetune=["high"] * len(m["history"]["iteration"])), "not numeric"),
    (lambda m: m.pop("history"), "lacks"),
    (lambda m: m["schedule"].update(lr=1.0), "lr 1.0"),
])
def test_a_hand_edited_checkpoint_is_refused_saying_what_is_inconsistent(baseline, tmp_path, change, words):
    path = tmp_path / "run.pt"
    run(baseline, schedule(), checkpoint=path)
    _edit_checkpoint(path, change)
    with pytest.raises(CheckpointMismatchError, match=words):
        run(baseline, schedule(), checkpoint=path)
    pruned, history = run(baseline, schedule(), checkpoint=path, restart_stale=True)    # and replaced on request
    assert len(history) > 1


def test_a_damaged_checkpoint_is_a_mismatch_that_restart_replaces(baseline, tmp_path):
    path = tmp_path / "run.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="cannot be read"):
        run(baseline, schedule(), checkpoint=path)
    _, history = run(baseline, schedule(), checkpoint=path, restart_stale=True)
    assert len(history) > 1
