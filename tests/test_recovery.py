"""Tests for pruning_lib.recover.recovery: one-shot prune + fine-tune, and its widget driven headless."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest

from pruning_lib.recover import train
from pruning_lib.recover.evaluation import evaluate
from pruning_lib.recover.iterative import fingerprint
from pruning_lib.plots.iterative import plot_recovery
from pruning_lib.recover.recovery import RECOVERY_COLUMNS, prune_and_finetune
from pruning_lib.widgets.recovery import recovery_widget
from pruning_lib.graph.groups import group_widths

from conftest import SHAPE, loaders, tiny_model

#: A hang bound, never a speed bound: a background run that has not reached its next event in this long is stuck
#: (each event here comes within seconds on 2 cores).
HANG_S = 600


@pytest.fixture(scope="module")
def baseline():
    model = tiny_model()
    train.fit(model, loaders()[0], steps=40, lr=1e-2, progress=False)
    return model.eval()


def recover(model, **kw):
    train_dl, val_dl = loaders()
    options = dict(input_shape=SHAPE, amount=0.5, criterion="taylor", steps=6, eval_every=2, rank_batches=2, lr=1e-3)
    return prune_and_finetune(model, train_dl, val_dl, **{**options, **kw})


def test_prune_and_finetune_records_the_drop_and_the_recovery(baseline):
    before = fingerprint(baseline)
    records, progress = [], []
    result = recover(baseline, on_record=lambda h, info: records.append((h, info)),
                     on_progress=lambda s, n: progress.append((s, n)))
    h = result.history
    assert fingerprint(baseline) == before, "a copy is pruned"
    assert list(h.columns) == list(RECOVERY_COLUMNS)
    assert list(h["phase"]) == ["baseline", "pruned", "fine-tune", "fine-tune", "fine-tune"]
    assert list(h["step"]) == [0, 0, 2, 4, 6]
    assert h["accuracy"].between(0, 1).all()
    assert progress == [(s, 6) for s in range(1, 7)]
    assert [len(r[0]) for r in records] == [1, 2, 3, 4, 5], "one callback per evaluation, with the history so far"
    assert records[-1][1]["pruned"] == result.pruned
    total = sum(group_widths(baseline).values())                  # 28: 4 + 8 + 8 filters and 8 hidden units
    assert result.baseline["filters"] == total and result.pruned["filters"] == total // 2
    assert sum(group_widths(result.model).values()) == total // 2
    assert result.pruned["gflops"] < result.baseline["gflops"] and result.pruned["params"] < result.baseline["params"]
    _, val_dl = loaders()
    assert result.accuracy == evaluate(result.model, val_dl)["accuracy"]
    assert h["accuracy"].iloc[0] == evaluate(baseline, val_dl)["accuracy"]
    assert not result.stopped
    assert recover(baseline).history.equals(h), "deterministic for a seed"


def test_should_stop_ends_fine_tuning_early(baseline):
    steps_seen = []
    result = recover(baseline, steps=50, on_progress=lambda s, n: steps_seen.append(s),
                     should_stop=lambda: len(steps_seen) >= 3)
    assert result.stopped and steps_seen == [1, 2, 3]
    assert list(result.history["step"]) == [0, 0, 2, 3]
    _, val_dl = loaders()
    assert result.accuracy == evaluate(result.model, val_dl)["accuracy"]


def test_amount_is_validated(baseline):
    with pytest.raises(ValueError, match="amount"):
        recover(baseline, amount=1.0)
    with pytest.raises(ValueError, match="removes none"):
        recover(baseline, amount=0.01)


def test_plot_recovery_draws_each_history(baseline):
    h = recover(baseline, steps=2).history
    fig = plot_recovery({"taylor": h, "again": h})
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["taylor", "before pruning", "again"], "one baseline entry, one line per history"


def make_widget(baseline, **kw):
    train_dl, val_dl = loaders()
    return recovery_widget(baseline, train_dl, val_dl, input_shape=SHAPE, rank_batches=2, eval_every=2,
                           lr=1e-3, **kw)


def png_shown(box) -> bool:
    outputs = box.controller.plot.outputs
    return len(outputs) == 1 and "image/png" in outputs[0]["data"]


def test_widget_renders_the_baseline_at_once(baseline):
    box = make_widget(baseline)
    assert png_shown(box)
    assert "before" in box.controller.sizes.value and "MFLOPs" in box.controller.sizes.value
    assert box.controller.result is None and box.controller.stop_button.disabled


def test_widget_button_runs_the_pure_function_headless(baseline):
    box = make_widget(baseline, background=False)
    c = box.controller
    c.amount.value, c.criterion.value, c.steps.value = 0.3, "l1", 4
    c.button.click()                                    # what a click in the browser does
    h = c.result.history
    assert list(h["phase"]) == ["baseline", "pruned", "fine-tune", "fine-tune"]
    assert list(h["step"]) == [0, 0, 2, 4]
    total = sum(group_widths(baseline).values())
    assert c.result.pruned["filters"] == total - round(0.3 * total)
    expected = recover(baseline, amount=0.3, criterion="l1", steps=4)
    pd.testing.assert_frame_equal(h, expected.history)
    assert c.progress.value == 4 and c.progress.max == 4
    assert png_shown(box) and "fewer" in c.sizes.value
    assert c.status.value.startswith("done") and not c.button.disabled and c.stop_button.disabled


def test_widget_stop_button_ends_a_background_run(baseline):
    box = make_widget(baseline, background=True, steps=200)
    c = box.controller
    started, pressed = threading.Event(), threading.Event()

    def hold_first_step(change):                        # in the run's thread: step 1 waits for Stop
        if change["new"] == 1:
            started.set()
            pressed.wait(timeout=HANG_S)

    c.progress.observe(hold_first_step, names="value")
    try:
        c.button.click()
        assert c.button.disabled
        hang = time.monotonic() + HANG_S
        while not started.wait(timeout=0.1):                # the first step, or the run's end (an error) first
            assert c.running, f"the run ended before its first fine-tuning step: {c.status.value!r}, {c.error!r}"
            assert time.monotonic() < hang, f"no fine-tuning step within {HANG_S} s of the press: the run hangs"
        assert c.running and not c.stop_button.disabled
        c.button.click()                                # a second press while running is ignored
        c.stop_button.click()
    finally:
        pressed.set()
    result = c.wait(timeout=HANG_S)
    assert not c.running, f"the run did not end within {HANG_S} s of Stop: it hangs at {c.status.value!r}"
    assert result is not None and result.stopped
    assert list(result.history["step"]) == [0, 0, 1], "Stop ends fine-tuning after the step it was pressed in"
    assert c.status.value.startswith("stopped") and not c.button.disabled


def test_widget_shows_errors_from_the_background_thread(baseline, monkeypatch):
    box = make_widget(baseline, background=True)
    c = box.controller
    monkeypatch.setattr(c, "criterion", type("Fake", (), {"value": "no-such-criterion"})())
    c.press()
    c.wait(timeout=HANG_S)
    assert not c.running, f"the run did not end within {HANG_S} s: it hangs at {c.status.value!r}"
    assert isinstance(c.error, ValueError) and "error" in c.status.value and not c.button.disabled
