"""``make demo``'s two lanes: what runs beside what when the machine has a core to spare.

The quick profile trains on one torch thread, so on two cores one sits idle while a notebook runs.  `TWO_LANES`
fills it.  Notebook 03's three Prune–Train–Repeat runs train first (``python -m pruning_lib.course.loops --notebook
03``: the notebook's own calls, checkpointed), the first in this lane and the other two in a second lane of child
processes; notebook 03 starts when all three are done (a notebook never starts before its loops, in either lane)
and reads them back, while the second lane runs notebook 02, then trains notebook 05's runs.  Notebooks 04 and 05
time networks: nothing runs beside them.  Every notebook prints what it would have computed alone, but its own
compute time (notebook 02's oracle, notebook 03's pairs of runs) is measured with the other lane busy on the other
core.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .paths import REPO_ROOT, build_dir, shown

__all__ = ["TWO_LANES", "Child", "SecondLane", "command", "default_lanes", "plan"]

#: ``("notebook", "02")`` runs notebook 02; ``("loops", "03")`` trains notebook 03's runs, ``("loops", "03", (1, 2))``
#: its runs 1 and 2 (positions in `course.loops.notebook_03_runs`).
Action = tuple

#: Steps in order.  In each step the first lane's actions run one after the other in ``make demo``'s process
#: (a notebook) or a child (loops), while the second lane's run one after the other as children.
TWO_LANES: list[tuple[list[Action], list[Action]]] = [
    ([("notebook", "01")], []),
    ([("loops", "03", (0,)), ("notebook", "03")], [("loops", "03", (1, 2)), ("notebook", "02"), ("loops", "05")]),
    ([("notebook", "04")], []),
    ([("notebook", "05")], []),
]


def default_lanes(profile: str) -> int:
    """2 for the quick profile (one training thread) on POSIX with two cores or more, else 1."""
    return 2 if profile == "quick" and os.name == "posix" and (os.cpu_count() or 1) >= 2 else 1


def plan(names: Sequence[str], lanes: int) -> list[tuple[list[Action], list[Action]]]:
    """The steps that run the notebooks `names` (two-digit prefixes, in order): `TWO_LANES` when two lanes run
    all of its notebooks, else one notebook per step and nothing beside it."""
    in_two = sorted(a[1] for step in TWO_LANES for lane in step for a in lane if a[0] == "notebook")
    if lanes == 2 and sorted(names) == in_two:
        return TWO_LANES
    return [([("notebook", n)], []) for n in names]


def command(action: Action, *, profile: str, overrides: str = "", commit: bool = False) -> list[str]:
    """The child process of `action`: ``course.loops`` for loops, ``course.demo --only NN --lanes 1`` for a notebook."""
    kind, notebook, runs = (*action, None)[:3]
    if kind == "loops":
        return [sys.executable, "-m", "pruning_lib.course.loops", "--notebook", notebook, "--profile", profile,
                "--overrides", overrides, *(["--runs", ",".join(map(str, runs))] if runs else [])]
    if kind == "notebook":
        return [sys.executable, "-m", "pruning_lib.course.demo", "--only", notebook, "--lanes", "1", "--profile",
                profile, "--overrides", overrides, *(["--commit-outputs"] if commit else [])]
    raise ValueError(f"unknown action {kind!r}: 'notebook' or 'loops'")


class Child:
    """One action in a child process with one torch thread, its output in ``build/lane_<kind>_<NN>.log``."""

    def __init__(self, action: Action, **how):
        self.action, self.how, self.process = action, how, None
        self.stopped, self.lock = False, threading.Lock()      # `stop` may come from another thread at any time
        runs = ["-".join(map(str, r)) for r in action[2:]]              # ("loops", "03", (1, 2)): lane_loops_03_1-2.log
        self.log = build_dir() / f"lane_{'_'.join([*action[:2], *runs])}.log"

    def run(self) -> float:
        """Run it to the end; its seconds, or a RuntimeError with the end of its log."""
        start = time.perf_counter()
        with open(self.log, "w", encoding="utf-8") as out:
            with self.lock:
                if self.stopped:
                    raise RuntimeError(f"{self.action[0]} {self.action[1]} was stopped before it started")
                self.process = subprocess.Popen(command(self.action, **self.how), cwd=REPO_ROOT, stdout=out,
                                                stderr=subprocess.STDOUT,
                                                env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
            code = self.process.wait()
        if code != 0:
            tail = Path(self.log).read_text(encoding="utf-8", errors="replace")[-3000:]
            raise RuntimeError(f"{self.action[0]} {self.action[1]} failed in a child process (exit {code}); "
                               f"{shown(self.log)} ends:\n{tail}")
        return time.perf_counter() - start

    def stop(self) -> None:
        """End the process if it runs; if it has not started, it never will."""
        with self.lock:
            self.stopped = True
            if self.process is not None and self.process.poll() is None:
                self.process.terminate()
        if self.process is not None:
            self.process.wait()


class SecondLane(threading.Thread):
    """Runs `actions` one after the other as `Child` processes; `finish` waits and raises the first failure,
    `stop` ends the child running and runs no more."""

    def __init__(self, actions: Sequence[Action], **how):
        super().__init__(daemon=True)
        self.actions, self.how = list(actions), how
        self.seconds: dict[Action, float] = {}
        self.over = False                             # True when the lane has ended, finished or not
        self.error: BaseException | None = None
        self.progress = threading.Condition()
        self.child: Child | None = None
        self.stopped = False

    def run(self) -> None:
        try:
            for action in self.actions:
                with self.progress:
                    if self.stopped:
                        return
                    self.child = Child(action, **self.how)
                seconds = self.child.run()
                with self.progress:
                    self.seconds[action] = seconds
                    self.progress.notify_all()
        except BaseException as err:                # handed to the main thread by `finish` or `wait_for_loops`
            self.error = err
        finally:
            with self.progress:
                self.over = True
                self.progress.notify_all()

    def wait_for_loops(self, notebook: str) -> None:
        """Wait until this lane has trained every loops action of `notebook` it holds; its error if it failed first."""
        mine = [a for a in self.actions if a[0] == "loops" and a[1] == notebook]
        with self.progress:
            self.progress.wait_for(lambda: all(a in self.seconds for a in mine) or self.over)
        if not all(a in self.seconds for a in mine):
            raise self.error or RuntimeError(f"the second lane stopped before notebook {notebook}'s loops were trained")

    def finish(self) -> dict[Action, float]:
        self.join()
        if self.error is not None:
            raise self.error
        return self.seconds

    def stop(self) -> None:
        with self.progress:
            self.stopped = True
            child = self.child
        if child is not None:
            child.stop()
        if self.ident is not None:                  # started
            self.join()
