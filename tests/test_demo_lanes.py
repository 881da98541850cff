"""make demo's two lanes (`course.lanes`): notebook 03's Prune–Train–Repeat runs train first (`course.loops`) and
the notebook reads them back, while a second lane runs notebook 02 and trains notebook 05's runs.

The order of the lanes is tested by events, not by timing: a second-lane action is held until the first lane is
seen waiting for it (its thread blocked in `SecondLane.wait_for_loops` or `finish`), or has gone past it.  No
verdict depends on the machine's speed; HANG_S only bounds a hang, and the failure says what hung.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
import torch

from conftest import assert_loops_read_back
from pruning_lib.course import demo, experiment, lanes, loops, resnet
from pruning_lib.course.paths import REPO_ROOT
from pruning_lib.course.profiles import get_profile

NOTEBOOKS = REPO_ROOT / "notebooks"
HANG_S = 600          # a hang bound, never a speed bound: what these tests wait for takes well under a second
LOOPS_HANG_S = 3600   # the same for a real `course.loops` run (about 100 s on 2 cores)


def code(stem: str) -> str:
    nb = json.loads((NOTEBOOKS / f"{stem}.ipynb").read_text(encoding="utf-8"))
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


def test_the_loops_module_makes_the_notebooks_own_calls():
    """If a notebook's calls change, `course.loops` must change with them (or the notebook trains its loops again)."""
    three = code("03_iterative_pruning")
    assert "return arms.checkpointed_run(baseline, P, criterion, loaders[\"train\"], val_batches, callbacks=live_plot, **changes)" in three
    assert [c for c, _ in loops.notebook_03_runs(get_profile("quick"))] == ["taylor", "random", "taylor"]
    for call in ('run("taylor", live=True)', 'run("random")', 'run("taylor", distill=other)'):
        assert call in three, call
    assert "other = 0.0 if P.distill else 0.7" in three
    five = code("05_pruning_resnets")
    assert "RESNET_SCHEDULE = resnet.schedule_changes(P)" in five
    assert ('resnet.pruning_run(baseline, P, c, loaders["train"], val_batches, **RESNET_SCHEDULE) for c in ("taylor", "random")'
            in five)
    assert 'f"model={resnet.MODELS[profile]}", overrides' in five
    quick = loops.notebook_profile("05", "quick")
    assert quick.model == resnet.MODELS["quick"]
    assert loops.notebook_05_runs(quick) == [(c, resnet.schedule_changes(quick)) for c in ("taylor", "random")]


@pytest.fixture
def folders(tmp_path, monkeypatch):
    for variable in ("PRUNING_BUILD_DIR", "PRUNING_REPORTS_DIR", "PRUNING_CHECKPOINT_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / variable))
    return tmp_path


def test_the_plan_puts_notebook_02_and_notebook_05s_loops_beside_notebook_03():
    everything = ["01", "02", "03", "04", "05"]
    assert lanes.plan(everything, 2) == lanes.TWO_LANES
    timed = [a[1] for first, second in lanes.TWO_LANES for a in first if a[0] == "notebook" and not second]
    assert {"04", "05"} <= set(timed), "the notebooks that time networks run with nothing beside them"
    three = loops.notebook_03_runs(get_profile("quick"))
    trained = sorted(i for step in lanes.TWO_LANES for lane in step for a in lane if a[:2] == ("loops", "03")
                     for i in (a[2] if a[2:] else range(len(three))))
    assert trained == list(range(len(three))), "every run of notebook 03 is trained once"
    assert lanes.plan(everything, 1) == [([("notebook", n)], []) for n in everything]
    assert lanes.plan(["02", "03"], 2) == [([("notebook", "02")], []), ([("notebook", "03")], [])]
    assert lanes.default_lanes("full") == 1


def test_a_child_is_the_loops_module_or_the_demo_with_one_notebook():
    loops_command = lanes.command(("loops", "05"), profile="quick", overrides="seed=1")
    assert loops_command[1:] == ["-m", "pruning_lib.course.loops", "--notebook", "05", "--profile", "quick",
                                 "--overrides", "seed=1"]
    assert lanes.command(("loops", "03", (1, 2)), profile="quick")[-2:] == ["--runs", "1,2"]
    notebook = lanes.command(("notebook", "02"), profile="quick", commit=True)
    assert notebook[1:5] == ["-m", "pruning_lib.course.demo", "--only", "02"] and notebook[-1] == "--commit-outputs"
    assert ["--lanes", "1"] == notebook[5:7], "a child runs its one notebook alone"


@pytest.mark.parametrize("runs", ["3", "x", "1,", "-1"])
def test_the_loops_module_refuses_runs_the_notebook_does_not_have(runs, capsys):
    with pytest.raises(SystemExit):
        loops.main(["--notebook", "03", "--profile", "quick", "--runs", runs])
    assert "notebook 03 has runs 0 to 2" in capsys.readouterr().err


def blocked_in(thread: threading.Thread, function: str) -> bool:
    """Whether `thread` is waiting on a lock or a condition inside `function` (a frame on its stack)."""
    frame, names = sys._current_frames().get(thread.ident), []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return function in names and bool({"wait", "join", "_wait_for_tstate_lock"} & set(names[:3]))


def hold_until(what: str, condition) -> None:
    """Wait until `condition()` is true: an event, polled; fail naming `what` after HANG_S (a hang)."""
    deadline = time.monotonic() + HANG_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {HANG_S} s waiting for {what}")
        time.sleep(0.01)


def test_two_lanes_run_in_the_plans_order(folders, monkeypatch):
    events, lock, main = [], threading.Lock(), threading.main_thread()
    started = {name: threading.Event() for name in ("03", "04")}      # the first lane has started notebook NN
    held = []

    def record(kind, name):
        with lock:
            events.append((kind, name, threading.current_thread() is main))

    def run_notebook(nb, profile, overrides=""):
        record("notebook", nb.name[:2])
        started.get(nb.name[:2], threading.Event()).set()
        return nb, 1.0

    def child_run(self):
        if threading.current_thread() is not main and self.action[0] == "loops":
            # the second lane's loops end only once the first lane waits for them (or went on without waiting):
            # notebook 03 for notebook 03's loops, the end of the step (`finish`) for notebook 05's
            waits_in, ahead = ("wait_for_loops", "03") if self.action[1] == "03" else ("finish", "04")
            hold_until(f"the first lane to wait in SecondLane.{waits_in} for {self.action[:2]} or to start notebook "
                       f"{ahead}", lambda: blocked_in(main, waits_in) or started[ahead].is_set())
            held.append((self.action[:2], "ahead" if started[ahead].is_set() else waits_in))
        record(*self.action[:2])
        return 2.0

    monkeypatch.setattr(demo, "run_notebook", run_notebook)
    monkeypatch.setattr(lanes.Child, "run", child_run)
    demo.main(["--lanes", "2"])
    main_lane = [(k, n) for k, n, main in events if main]
    assert main_lane == [("notebook", "01"), ("loops", "03"), ("notebook", "03"), ("notebook", "04"), ("notebook", "05")]
    second = [(k, n) for k, n, main in events if not main]
    assert second == [("loops", "03"), ("notebook", "02"), ("loops", "05")]
    assert held == [(("loops", "03"), "wait_for_loops"), (("loops", "05"), "finish")], (
        "the first lane went on without waiting for the second lane's loops (notebook 03) or its end (notebook 04)")
    order = [(k, n, main) for k, n, main in events]
    assert order.index(("loops", "03", False)) < order.index(("notebook", "03", True)), "notebook 03 waited for its loops"
    assert order.index(("notebook", "01", True)) < order.index(("notebook", "02", False))
    assert order.index(("loops", "05", False)) < order.index(("notebook", "04", True)), "the second lane ends first"


def failing_child(code):
    return lambda action, **how: [sys.executable, "-c", f"import sys; print('the end of its log'); sys.exit({code})"]


def test_a_failing_child_stops_the_demo_with_the_end_of_its_log(folders, monkeypatch):
    monkeypatch.setattr(demo, "run_notebook", lambda nb, profile, overrides="": (nb, 1.0))
    monkeypatch.setattr(lanes, "command", failing_child(3))
    with pytest.raises(RuntimeError, match="(?s)loops 03 failed in a child process.*exit 3.*the end of its log"):
        demo.main(["--lanes", "2"])


def test_a_notebook_that_fails_stops_the_second_lane(folders, monkeypatch):
    marker, children = folders / "notebook-02-started", {}
    waits = f"from pathlib import Path; import time; Path({str(marker)!r}).touch(); time.sleep({HANG_S})"

    class Recorded(lanes.Child):
        def __init__(self, action, **how):
            super().__init__(action, **how)
            children[action] = self

    def command(action, **how):      # notebook 02's child says it started, then would run for HANG_S
        return [sys.executable, "-c", waits if action == ("notebook", "02") else "pass"]

    def run_notebook(nb, profile, overrides=""):
        if nb.name.startswith("03"):  # fails while notebook 02's child runs
            hold_until("notebook 02's child to start", marker.exists)
            raise ValueError("a cell of notebook 03 raised")
        return nb, 1.0

    monkeypatch.setattr(lanes, "Child", Recorded)
    monkeypatch.setattr(lanes, "command", command)
    monkeypatch.setattr(demo, "run_notebook", run_notebook)
    with pytest.raises(ValueError, match="a cell of notebook 03 raised"):
        demo.main(["--lanes", "2"])
    child = children[("notebook", "02")].process
    assert child.returncode == -signal.SIGTERM, (
        f"notebook 02's child ended with {child.returncode}, not by the demo's SIGTERM: the demo waited for it "
        "instead of stopping it")
    assert ("loops", "05") not in children, "the second lane went on after it was stopped"


@pytest.mark.slow
def test_notebook_05s_loops_from_the_loops_module_are_read_back_by_its_calls(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNING_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.setenv("PRUNING_OVERRIDES", "finetune_steps=2,target_fraction=0.3,rank_batches=1")
    profile = loops.notebook_profile("05", "quick")
    torch.manual_seed(0)
    experiment.save_baseline(experiment.architecture(profile), pd.DataFrame(), profile)   # stands for notebook 05's
    done = run_loops(["--notebook", "05", "--profile", "quick"])
    assert done.returncode == 0, done.stderr[-4000:]
    assert "(1 processes)" in done.stdout
    assert loops.NOTEBOOKS["05"] == (loops.notebook_05_runs, resnet.pruning_run)
    assert_loops_read_back("05", profile)


def run_loops(arguments: list[str]) -> subprocess.CompletedProcess:
    """`python -m pruning_lib.course.loops ARGUMENTS` with one torch thread; a hang (LOOPS_HANG_S) fails with the end
    of its output."""
    command = [sys.executable, "-m", "pruning_lib.course.loops", *arguments]
    try:
        return subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                              timeout=LOOPS_HANG_S)
    except subprocess.TimeoutExpired as err:
        out, errors = (text.decode(errors="replace") if isinstance(text, bytes) else text or ""
                       for text in (err.stdout, err.stderr))
        pytest.fail(f"`{' '.join(command[1:])}` did not end within {LOOPS_HANG_S} s (a hang bound); its output "
                    f"ends:\n{out[-2000:]}\n--- its stderr ends ---\n{errors[-3000:]}", pytrace=False)


def test_a_child_stopped_before_it_starts_never_starts(folders, monkeypatch):
    monkeypatch.setattr(lanes, "command", lambda action, **how: [sys.executable, "-c", "import time; time.sleep(60)"])
    child = lanes.Child(("notebook", "02"), profile="quick")
    child.stop()
    with pytest.raises(RuntimeError, match="stopped before it started"):
        child.run()
    assert child.process is None
