"""``make demo``: run every notebook in order, headless, and print what they measured.

    python -m pruning_lib.course.demo [--profile quick|full] [--only 01] [--lanes 1|2] [--commit-outputs]

Executed notebooks and their HTML go to build/; the notebooks' machine-readable
results go to reports/ (both at the repository root, whatever the working directory).
``--commit-outputs`` (for maintainers, quick profile) also writes each executed notebook back
into notebooks/, clean: without papermill's injected cell, timings and machine paths.

With two lanes (the quick profile's default on two cores or more: it trains on one thread) notebooks 03's and 05's
Prune–Train–Repeat runs train in child processes and notebook 02 runs beside notebook 03 (`course.lanes` has the
plan); notebooks 04 and 05 time networks: they always run alone.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import lanes as two_lanes
from .paths import REPO_ROOT, build_dir, reports_dir, shown

if TYPE_CHECKING:
    from traitlets.config import Config


#: The longest one cell may run, per profile (the quick profile's longest cell takes about a minute on 2 cores).
#: Rarely, the kernel finishes a cell but the message saying so is lost and papermill would wait forever (seen
#: twice in about forty runs of notebook 02's widget cell, both with two notebooks running at once): the cell
#: then times out and the notebook is run once more from the start.
CELL_TIMEOUT_S = {"quick": 600, "full": 4 * 3600}


def notebooks(only: str | None = None) -> list[Path]:
    found = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    return [nb for nb in found if only is None or nb.name.startswith(only)]


def kernel_config(socket_dir: Path) -> Config:
    """The kernel manager's settings for a headless run: on Linux and macOS, talk to the kernel over local (Unix)
    sockets in `socket_dir` (``KernelManager.transport = "ipc"``), as ipykernel itself advises.

    Over TCP, the default, every ipykernel (7 or later) logs "Kernel is running over TCP without encryption" to
    the terminal when it starts: a warning for every notebook of ``make demo``.  IPC sockets are files, here in a
    folder of this run's own (an absolute path: the kernel runs in the notebook's folder), so nothing goes over
    the network and the kernel has no reason to warn.  On Windows (no IPC sockets), or where `socket_dir` is too
    long a path for a socket's name, TCP stays."""
    from traitlets.config import Config

    ip = Path(socket_dir).resolve() / "kernel"
    fits = len(os.fsencode(str(ip))) + len("-99999") <= 100      # a socket's path: at most 103 bytes on macOS
    return Config({"KernelManager": {"transport": "ipc", "ip": str(ip)}}) if os.name == "posix" and fits else Config()


def execute(notebook: Path, out: Path, parameters: dict, *, cwd: Path, timeout: float | None = None) -> None:
    """Run `notebook` headless with papermill (`parameters` injected) and write the executed notebook to `out`;
    its kernel is set up by `kernel_config`, with its sockets in a temporary folder removed afterwards."""
    import papermill

    with tempfile.TemporaryDirectory(prefix="kernel-") as sockets:
        papermill.execute_notebook(str(notebook), str(out), parameters=parameters, cwd=str(cwd), progress_bar=False,
                                   kernel_name="python3", language="python", execution_timeout=timeout,
                                   config=kernel_config(Path(sockets)))


def run_notebook(notebook: Path, profile: str, overrides: str = "") -> tuple[Path, float]:
    """Execute one notebook with papermill (profile and overrides injected as parameters); also write its HTML."""
    from nbconvert import HTMLExporter

    out = build_dir() / notebook.name
    timeout = CELL_TIMEOUT_S.get(profile, max(CELL_TIMEOUT_S.values()))
    start = time.perf_counter()
    for attempt in (1, 2):
        try:
            execute(notebook, out, {"profile": profile, "overrides": overrides}, cwd=notebook.parent, timeout=timeout)
            break
        except Exception as err:                            # nbclient's CellTimeoutError, as papermill passes it on
            if attempt == 2 or not _timed_out(err):
                raise
            print(f"  a cell of {notebook.name} gave no answer within {timeout} s (a lost kernel message); "
                  "running the notebook again", flush=True)
    seconds = time.perf_counter() - start
    html, _ = HTMLExporter().from_filename(str(out))
    out.with_suffix(".html").write_text(html, encoding="utf-8")
    return out, seconds


def _timed_out(err: BaseException) -> bool:
    return isinstance(err, TimeoutError) or "timed out" in str(err).lower()


def clean_for_commit(executed: Path, target: Path) -> Path:
    """Write the executed notebook to `target` without what is true only of this run's machine:
    papermill's ``injected-parameters`` cell and its metadata (timings, input/output paths)."""
    import nbformat

    nb = nbformat.read(str(executed), as_version=4)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    nb.metadata.pop("papermill", None)
    nbformat.write(nb, str(target))
    return target


def _report(name: str, writer: str) -> tuple[dict | None, list[str]]:
    """``reports/<name>`` as a dict, or None and the line that says which notebook writes it."""
    path = reports_dir() / name
    if not path.exists():
        return None, [f"(no {shown(path)} yet: {writer} writes it)"]
    return json.loads(path.read_text()), []


def summary_lines() -> list[str]:
    """The notebooks' headline numbers from reports/summary.json, as a small table."""
    s, missing = _report("summary.json", "notebook 04")
    if s is None:
        return missing
    rows = [("dense", s["dense"])] + list(s["pruned"].items())
    mega = s["dense"]["gflops"] < 1            # one FLOPs unit per profile: MFLOPs for the small networks
    unit, scale = ("MFLOPs", 1e3) if mega else ("GFLOPs", 1.0)
    lines = [f"profile={s['profile']}  dataset={s['dataset']}  model={s['model']}",
             f"{'model':<14}{'accuracy':>10}{unit:>10}{'params':>12}{'size MB':>10}{'latency ms':>12}{'speedup':>9}"]
    for name, r in rows:
        lines.append(f"{name:<14}{100 * r['accuracy']:>9.1f}%{scale * r['gflops']:>10.{1 if mega else 2}f}{r['params']:>12,}"
                     f"{r['size_mb']:>10.2f}{r['latency_ms']:>12.2f}{r.get('speedup', 1.0):>8.2f}x")
    return lines


def lessons_lines() -> list[str]:
    """reports/lessons.json as a small table: each lesson, its gap and noise, and its outcome (met, missed or within
    the noise, judged again by `lessons.outcome`)."""
    from . import lessons                           # torch and pandas only where the table is printed

    report, missing = _report("lessons.json", "notebooks 02-04")
    if report is None:
        return missing
    lines = [f"{'lesson':<24}{'gap (points)':>14}{'noise':>8}  result"]
    for name, e in report.items():
        result = "reported" if e["reported_only"] else lessons.outcome(e)
        noise = "inf" if e["noise_points"] is None else f"{e['noise_points']:.1f}"
        lines.append(f"{name:<24}{e['gap_points']:>+14.2f}{noise:>8}  {result}")
    return lines


def resnet_lines() -> list[str]:
    """reports/resnet.json (notebook 05) as a few lines: the dense and pruned ResNet, each target met or not."""
    r, missing = _report("resnet.json", "notebook 05")
    if r is None:
        return missing
    lines = [f"model={r['model']}  ({r['measurement']['form']} form, batch {r['measurement']['batch_size']}, "
             f"{r['measurement']['num_threads']} thread)",
             f"{'model':<14}{'accuracy':>10}{'MFLOPs':>10}{'params':>12}{'latency ms':>12}{'speedup':>9}"]
    for name, e in [("dense", r["dense"]), *r["pruned"].items()]:
        lines.append(f"{name:<14}{100 * e['accuracy']:>9.1f}%{e['mflops']:>10.1f}{e['params']:>12,}"
                     f"{e['latency_ms']:>12.2f}{e['speedup']:>8.2f}x")
    for name, t in r["targets"].items():
        measured = t["measured"]
        lines.append(f"  {name:<12} {measured:>7.2f}  required {t['required']:<30} {'met' if t['met'] else 'NOT met'}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=None, help="quick (default, or $PRUNING_PROFILE) or full")
    parser.add_argument("--only", default=None, help="run only notebooks whose name starts with this, e.g. 01")
    parser.add_argument("--overrides", default="", help="profile fields for this run, e.g. 'seed=1,finetune_steps=20' "
                        "(added to $PRUNING_OVERRIDES)")
    parser.add_argument("--lanes", type=int, choices=(1, 2), default=None,
                        help="2: run notebook 02 and train notebooks 03's and 05's loops in a second lane (default "
                             "for the quick profile on 2+ cores); 1: one notebook at a time")
    parser.add_argument("--commit-outputs", action="store_true",
                        help="also write the executed notebooks back into notebooks/ (clean), to commit them")
    args = parser.parse_args(argv)
    profile = args.profile or os.environ.get("PRUNING_PROFILE") or "quick"
    todo = notebooks(args.only)
    if not todo:
        raise SystemExit(f"no notebooks match {args.only!r} in {REPO_ROOT / 'notebooks'}")
    lanes = args.lanes or two_lanes.default_lanes(profile)
    by_name = {nb.name[:2]: nb for nb in todo}
    how = {"profile": profile, "overrides": args.overrides, "commit": args.commit_outputs}
    timings = {}
    for first, second in two_lanes.plan(list(by_name), lanes):
        beside = two_lanes.SecondLane(second, **how)
        if second:
            print(f"second lane, in child processes: {', then '.join(' '.join(map(str, a)) for a in second)} "
                  f"(logs: {shown(build_dir())}/lane_*.log)", flush=True)
            beside.start()
        try:
            for action in first:
                kind, name = action[:2]
                if kind == "loops":
                    which = f" {list(action[2])}" if action[2:] else ""
                    print(f"training notebook {name}'s Prune–Train–Repeat runs{which} (course.loops) ...", flush=True)
                    print(f"  done in {two_lanes.Child(action, **how).run():.0f} s", flush=True)
                    continue
                beside.wait_for_loops(name)                 # its loops in the second lane, if any, first
                print(f"running {by_name[name].name} ({profile} profile) ...", flush=True)
                out, timings[name] = run_notebook(by_name[name], profile, args.overrides)
                if args.commit_outputs:
                    clean_for_commit(out, by_name[name])
                print(f"  done in {timings[name]:.0f} s -> {shown(out)} (+ .html)", flush=True)
        except BaseException:
            beside.stop()
            raise
        if second:
            for action, seconds in beside.finish().items():
                print(f"  second lane: {' '.join(map(str, action))} done in {seconds:.0f} s", flush=True)
                if action[0] == "notebook":
                    timings[action[1]] = seconds
    print("\nTime per notebook" + (" (with two lanes: see course/lanes.py)" if lanes == 2 else "") + ":")
    for name in sorted(timings):
        print(f"  {by_name[name].name:<32}{timings[name]:>7.0f} s")
    print(f"\nReports in {shown(reports_dir())}/: "
          + ", ".join(sorted(p.name for p in reports_dir().glob("*.json"))))
    print("\n".join(["", "Summary (reports/summary.json):", *summary_lines()]))
    print("\n".join(["", "Lessons (reports/lessons.json; gap = the first side minus the second, noise = 2 standard "
                      "errors of the paired difference):", *lessons_lines()]))
    print("\n".join(["", "The pruned ResNet (reports/resnet.json):", *resnet_lines()]))


if __name__ == "__main__":
    main()
