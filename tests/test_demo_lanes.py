"""make demo's two lanes: notebooks 03's and 05's Prune–Train–Repeat runs train in a second process
(`course.loops`) beside notebooks 02 and 03, and each notebook reads its finished runs back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import Cuts
from pruning_lib.course import demo, experiment, loops, resnet
from pruning_lib.course.paths import REPO_ROOT
from pruning_lib.course.profiles import get_profile

NOTEBOOKS = REPO_ROOT / "notebooks"


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


class Recorder:
    def __init__(self, loops_exit=0):
        self.events, self.loops_exit = [], loops_exit

    def run_notebook(self, nb, profile, overrides=""):
        self.events.append(("notebook", nb.name[:2]))
        return nb, 1.0

    def start_loops(self, notebook, profile, overrides):
        self.events.append(("loops", notebook))
        process = subprocess.Popen([sys.executable, "-c", f"import sys; print('loops log'); sys.exit({self.loops_exit})"],
                                   stdout=subprocess.DEVNULL)
        log = demo.build_dir() / f"loops_{notebook}.log"
        log.write_text("the end of the loops' log\n")
        return process, log


@pytest.fixture
def recorder(tmp_path, monkeypatch):
    for variable in ("PRUNING_BUILD_DIR", "PRUNING_REPORTS_DIR", "PRUNING_CHECKPOINT_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / variable))
    rec = Recorder()
    monkeypatch.setattr(demo, "run_notebook", rec.run_notebook)
    monkeypatch.setattr(demo, "start_loops", rec.start_loops)
    return rec


def test_two_lanes_train_the_next_loops_beside_notebooks_02_and_03(recorder):
    demo.main(["--lanes", "2"])
    assert recorder.events == [("notebook", "01"), ("loops", "03"), ("notebook", "02"), ("loops", "05"),
                               ("notebook", "03"), ("notebook", "04"), ("notebook", "05")]


def test_one_lane_or_one_notebook_trains_nothing_beside(recorder):
    demo.main(["--lanes", "1"])
    assert [e for e in recorder.events if e[0] == "loops"] == []
    recorder.events.clear()
    demo.main(["--lanes", "2", "--only", "02"])          # notebook 03 does not run: its loops are not trained
    assert recorder.events == [("notebook", "02")]
    assert demo.default_lanes("full") == 1


def test_loops_that_fail_stop_the_demo_with_their_log(recorder):
    recorder.loops_exit = 3
    with pytest.raises(RuntimeError, match="(?s)exit 3.*the end of the loops' log"):
        demo.main(["--lanes", "2"])


def test_a_notebook_that_fails_stops_its_loops(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNING_BUILD_DIR", str(tmp_path))
    started = {}

    def start_loops(notebook, profile, overrides):
        started["process"] = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        return started["process"], tmp_path / "loops.log"

    def failing(*args, **kwargs):
        raise ValueError("a cell raised")

    monkeypatch.setattr(demo, "start_loops", start_loops)
    monkeypatch.setattr(demo, "run_notebook", failing)
    with pytest.raises(ValueError, match="a cell raised"):
        demo.run_with_loops(NOTEBOOKS / "02_ranking_criteria.ipynb", "quick", "", "03")
    assert started["process"].poll() is not None, "the loops' process was left running"


@pytest.mark.slow
def test_notebook_05s_loops_from_the_loops_module_are_read_back_by_its_calls(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNING_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.setenv("PRUNING_OVERRIDES", "finetune_steps=2,target_fraction=0.3,rank_batches=1")
    profile = loops.notebook_profile("05", "quick")
    torch.manual_seed(0)
    experiment.save_baseline(experiment.architecture(profile), pd.DataFrame(), profile)   # stands for notebook 05's
    done = subprocess.run([sys.executable, "-m", "pruning_lib.course.loops", "--notebook", "05", "--profile", "quick"],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "(1 processes)" in done.stdout
    baseline = experiment.load_baseline(profile, progress=False)
    loaders_ = experiment.target_loaders(profile)
    val = list(loaders_["val"])
    for criterion, changes in loops.notebook_05_runs(profile):
        cuts = Cuts()
        _, history, _ = resnet.pruning_run(baseline, profile, criterion, loaders_["train"], val, callbacks=[cuts],
                                           **changes)
        assert len(history) > 1 and cuts.rows == [], f"{criterion} {changes}: ran again instead of reading it back"
