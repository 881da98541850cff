"""The widget paths of ``docs/teaching.md``, run exactly as the guide writes them.

The guide's table gives, for each notebook, the cells a teacher runs to reach its widget, in one fixed phrasing
(steps separated by commas, the last one after ", then"; ``PHRASES`` below, the guide says the same):

- ``the setup cells``: every code cell before the heading ``## 1.``;
- ``the code cells of section N``: every code cell of section N (after the Markdown heading ``## N.``, up to the
  next ``## `` heading);
- ``the first code cell of section N``;
- ``the widget cell of section N``: the one code cell of section N that calls a ``…_widget(`` function (last);
- ``(no widget)`` for a notebook that has none.

The path is parsed from the guide as written (so changing the guide changes what runs) and the cells are found by
their section headings, so cells inserted elsewhere do not move them.  `test_the_guide_names_every_widget_path`
(no kernel, well under a second) checks that every notebook whose code calls ``*_widget(`` has a path, that a
notebook without one says ``(no widget)``, and that every step names cells that exist.
`test_widget_path_runs` runs each path's cells, in order, in one fresh kernel per notebook (nbclient, the
notebook's folder as working directory, ``PRUNING_PROFILE=quick``, one torch thread) and checks that no cell
raises, that the last cell displays a widget, and that the widget's first draw raised nothing.

Cost: one kernel per notebook with a widget (02, 03, 05): starting it and importing torch and the library, loading
the baseline and the data, and what the path computes (02: all criteria on `P.rank_batches` training batches, and
the widget's first draw: the unpruned and one pruned copy on the 400 validation images; 03: the dense network on
the test set and one validation pass; 05: the criteria on `P.rank_batches` batches, the group oracle on
`P.oracle_batches`, and the widget's first draw): 10 to 20 s a notebook, about 45 s for the three (pytest's
durations, 2 shared CPU cores) when ``checkpoints/`` holds the quick baselines.  Where it does not (CI), the first
path that loads a baseline trains it (`experiment.load_baseline`, as notebook 01 does) and saves it to
``checkpoints/``, where the notebooks' run reads it back.  Nothing under ``notebooks/`` or ``reports/`` is written.
"""

from __future__ import annotations

import copy
import json
import re
import sys
import time
from dataclasses import dataclass

import pytest

from pruning_lib.course.paths import REPO_ROOT

GUIDE = REPO_ROOT / "docs" / "teaching.md"
NOTEBOOKS = REPO_ROOT / "notebooks"
PATH_COLUMN = "to reach its widget, run"
NO_WIDGET = "(no widget)"
WIDGET_CALL = re.compile(r"\b\w+_widget\(")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
# the steps a path may have; the guide's definition of its phrasing says the same
PHRASES = {
    "setup": re.compile(r"the setup cells"),
    "all": re.compile(r"the code cells of section (\d+)"),
    "first": re.compile(r"the first code cell of section (\d+)"),
}
WIDGET_STEP = re.compile(r"the widget cell of section (\d+)")
CELL_TIMEOUT_S = 3600         # a hang bound, not a speed bound: a cell that loads a baseline trains it when
                              # checkpoints/ has none (CI), a few minutes on 2 cores
REPLY_PROBE_S = 300           # after this long without a reply, ask the kernel whether it is still running the cell


def run_cell(client, cell, index: int) -> None:
    """`client.execute_cell`, bounded against a reply that never comes.  ipykernel 7 can run a cell, go idle and
    never deliver its execute_reply (ipython/ipykernel#1554, #1529: a request or reply lost on the shell socket under
    load; seen here on one shared core, in notebook 02's widget cell, the kernel idle and the client waiting for its
    whole hang bound).  So the reply is awaited for REPLY_PROBE_S; then one kernel_info request goes to the kernel,
    which answers it only when it is idle (shell requests run in order): while no answer comes, the cell is still
    running and the wait goes on, up to CELL_TIMEOUT_S in all; once it answers, the cell's reply was lost (or came
    after the probe's deadline), and the cell runs once more (a widget path's cells may run twice).  Returns only
    when a reply arrived."""
    from nbclient.exceptions import CellTimeoutError

    start = time.monotonic()
    client.timeout = REPLY_PROBE_S
    try:
        client.execute_cell(cell, index)
        return
    except CellTimeoutError:
        pass
    probe = client.kc.kernel_info()
    client.timeout = max(1, int(CELL_TIMEOUT_S - (time.monotonic() - start)))
    try:
        answered = client.wait_for_reply(probe)
    except (AssertionError, CellTimeoutError):                   # nbclient's timeout without a cell
        answered = None
    if answered is None:
        pytest.fail(f"cell {index} of the path ran for {CELL_TIMEOUT_S} s and the kernel never became idle "
                    f"(a kernel_info request sent after {REPLY_PROBE_S} s got no answer): a hang in the cell",
                    pytrace=False)
    print(f"cell {index}: no reply within {REPLY_PROBE_S} s; the kernel answered once idle, so the cell ran again "
          "(its reply was lost or late: ipykernel#1554)")
    client.timeout = max(1, int(CELL_TIMEOUT_S - (time.monotonic() - start)))
    client.execute_cell(cell, index)


# ---------------------------------------------------------------- the guide
def _cells_of_row(line: str) -> list[str]:
    """The cells of a Markdown table row (a ``\\|`` inside a cell is not a separator)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def guide_paths(text: str | None = None) -> dict[str, str]:
    """``{notebook stem: path as written}`` from the guide's table whose header has the column `PATH_COLUMN`."""
    text = GUIDE.read_text(encoding="utf-8") if text is None else text
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith("|") and PATH_COLUMN in _cells_of_row(line):
            column = _cells_of_row(line).index(PATH_COLUMN)
            paths = {}
            for row in lines[i + 2:]:                        # after the header and the |---| line
                if not row.lstrip().startswith("|"):
                    break
                cells = _cells_of_row(row)
                name = re.fullmatch(r"`([^`]+)`", cells[0])
                assert name, f"{GUIDE.name}: the first cell of a row of the widget table is not a `notebook`: {row!r}"
                paths[name.group(1)] = cells[column]
            return paths
    raise AssertionError(f"{GUIDE} has no table with a column {PATH_COLUMN!r}")


@dataclass(frozen=True)
class Step:
    kind: str                  # "setup", "all", "first" or "widget"
    section: int | None
    text: str


def parse_path(path: str) -> list[Step]:
    """The steps of one path, in order; an AssertionError names a phrase the guide's phrasing does not have."""
    head, sep, last = path.rpartition(", then ")
    assert sep, f"the path {path!r} has no ', then ' before its last step (the widget cell)"
    steps = []
    for text in head.split(", "):
        text = text.strip()
        for kind, phrase in PHRASES.items():
            match = phrase.fullmatch(text)
            if match:
                steps.append(Step(kind, int(match.group(1)) if match.groups() else None, text))
                break
        else:
            raise AssertionError(f"the step {text!r} of {path!r} is not one of: the setup cells, the code cells of "
                                 "section N, the first code cell of section N (then: the widget cell of section N)")
    match = WIDGET_STEP.fullmatch(last.strip())
    assert match, f"the last step of {path!r} is {last.strip()!r}, not 'the widget cell of section N'"
    return [*steps, Step("widget", int(match.group(1)), last.strip())]


# ---------------------------------------------------------------- the notebooks
def notebook(stem: str) -> dict:
    return json.loads((NOTEBOOKS / f"{stem}.ipynb").read_text(encoding="utf-8"))


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _heading(cell: dict) -> str | None:
    """The first line of a Markdown cell that opens with a ``## `` heading, else None."""
    if cell["cell_type"] != "markdown":
        return None
    first = _source(cell).lstrip().split("\n", 1)[0]
    return first if first.startswith("## ") else None


def section_code_cells(nb: dict, section: int) -> list[int]:
    """Indices of the code cells of section `section`: after the heading ``## N.``, up to the next ``## ``."""
    cells = nb["cells"]
    starts = [i for i, c in enumerate(cells) if (_heading(c) or "").startswith(f"## {section}.")]
    assert len(starts) == 1, (f"{len(starts)} headings start with '## {section}.' "
                              f"(headings: {[_heading(c) for c in cells if _heading(c)]})")
    found = []
    for i in range(starts[0] + 1, len(cells)):
        if _heading(cells[i]):
            break
        if cells[i]["cell_type"] == "code":
            found.append(i)
    return found


def setup_code_cells(nb: dict) -> list[int]:
    """Indices of the code cells before the heading ``## 1.``."""
    first = next((i for i, c in enumerate(nb["cells"]) if (_heading(c) or "").startswith("## 1.")), None)
    assert first is not None, "the notebook has no heading '## 1.'"
    return [i for i, c in enumerate(nb["cells"][:first]) if c["cell_type"] == "code"]


def resolve(nb: dict, steps: list[Step]) -> list[int]:
    """The notebook's cell indices a path runs, in the path's order."""
    chosen = []
    for step in steps:
        if step.kind == "setup":
            found = setup_code_cells(nb)
        else:
            found = section_code_cells(nb, step.section)
            if step.kind == "first":
                found = found[:1]
            elif step.kind == "widget":
                found = [i for i in found if WIDGET_CALL.search(_source(nb["cells"][i]))]
                assert len(found) == 1, f"{step.text!r}: {len(found)} code cells of section {step.section} call *_widget("
        assert found, f"{step.text!r} names no code cell"
        chosen += found
    assert len(set(chosen)) == len(chosen), f"the path runs a cell twice: {chosen}"
    assert chosen == sorted(chosen), f"the path goes back up the notebook: cells {chosen}"
    return chosen


def notebook_stems() -> list[str]:
    return sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def has_widget(stem: str) -> bool:
    return any(c["cell_type"] == "code" and WIDGET_CALL.search(_source(c)) for c in notebook(stem)["cells"])


WIDGET_NOTEBOOKS = [stem for stem in notebook_stems() if has_widget(stem)]


# ---------------------------------------------------------------- tests
def test_the_guide_names_every_widget_path():
    paths = guide_paths()
    assert set(paths) == set(notebook_stems()), (
        f"the guide's table lists {sorted(paths)}; notebooks/ has {notebook_stems()}")
    assert WIDGET_NOTEBOOKS, "no notebook calls a *_widget( function: is WIDGET_CALL still right?"
    for stem, path in paths.items():
        if stem not in WIDGET_NOTEBOOKS:
            assert path == NO_WIDGET, f"{stem} has no *_widget( call, but the guide gives the path {path!r}"
            continue
        assert path != NO_WIDGET, f"{stem} has a widget, but the guide says {NO_WIDGET}"
        nb = notebook(stem)
        chosen = resolve(nb, parse_path(path))
        assert chosen[:2] == setup_code_cells(nb)[:2], (
            f"{stem}: a path starts with the parameters cell and the imports (the setup cells); it runs {chosen}")


def test_parse_path_reads_the_phrasing_and_refuses_others():
    steps = parse_path("the setup cells, the code cells of section 2, the first code cell of section 4, "
                       "then the widget cell of section 5")
    assert [(s.kind, s.section) for s in steps] == [("setup", None), ("all", 2), ("first", 4), ("widget", 5)]
    assert [(s.kind, s.section) for s in parse_path("the setup cells, then the widget cell of section 10")] == [
        ("setup", None), ("widget", 10)]
    for wrong in ("the setup cells, then the widget cell",                      # no section
                  "the first cell of section 2, then the widget cell of section 6",   # "first cell", not "first code cell"
                  "the setup cells and the widget cell of section 3"):          # no ", then "
        with pytest.raises(AssertionError):
            parse_path(wrong)


def test_sections_are_found_by_heading_not_position():
    def md(text):
        return {"cell_type": "markdown", "metadata": {}, "source": text}

    def code(text):
        return {"cell_type": "code", "metadata": {}, "source": text, "outputs": [], "execution_count": None}

    nb = {"cells": [md("# title"), code("profile = 'quick'"), code("import x"), md("## 1. One"), code("a = 1"),
                    md("### a subsection"), code("b = 2"), md("## 2. Two"), md("text"), code("c = 3"),
                    code("w = some_widget(c)"), md("## Exercises"), code("other_widget(1)")]}
    assert setup_code_cells(nb) == [1, 2]
    assert section_code_cells(nb, 1) == [4, 6]          # a ### subsection does not end a section
    path = "the setup cells, the code cells of section 1, the first code cell of section 2, then the widget cell of section 2"
    assert resolve(nb, parse_path(path)) == [1, 2, 4, 6, 9, 10]
    nb["cells"].insert(8, code("inserted = True"))       # a cell inserted in section 2: "first" follows it
    assert resolve(nb, parse_path(path)) == [1, 2, 4, 6, 8, 11]
    with pytest.raises(AssertionError, match="heading"):
        resolve(nb, parse_path("the setup cells, then the widget cell of section 3"))


@pytest.mark.slow
@pytest.mark.parametrize("stem", WIDGET_NOTEBOOKS)
def test_widget_path_runs(stem, monkeypatch):
    """The guide's path for `stem`, cell by cell, in one fresh kernel: no cell raises; the last shows a widget."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    path = guide_paths().get(stem)
    assert path and path != NO_WIDGET, f"{stem} calls a *_widget( function, but the guide gives no path to it"
    nb = notebook(stem)
    chosen = resolve(nb, parse_path(path))

    monkeypatch.setenv("PRUNING_PROFILE", "quick")
    monkeypatch.delenv("PRUNING_OVERRIDES", raising=False)       # the path as a teacher runs it
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "1")           # this environment's python3 kernel
    monkeypatch.delenv("MPLBACKEND", raising=False)              # the kernel's inline backend

    cells = []
    for i in chosen:
        cell = copy.deepcopy(nb["cells"][i])
        cell["source"], cell["outputs"], cell["execution_count"] = _source(cell), [], None
        cell.get("metadata", {}).pop("execution", None)
        cells.append(nbformat.from_dict(cell))
    run = nbformat.v4.new_notebook(cells=cells, metadata=copy.deepcopy(nb.get("metadata", {})))
    run.metadata.pop("widgets", None)
    client = NotebookClient(run, timeout=CELL_TIMEOUT_S, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    with client.setup_kernel():
        for k, (i, cell) in enumerate(zip(chosen, run.cells)):
            try:
                run_cell(client, cell, k)
            except CellExecutionError as err:
                first = _source(cell).strip().split("\n", 1)[0]
                message = re.sub(r"\x1b\[[0-9;]*m", "", str(err))           # no terminal colours
                pytest.fail(f"{stem}, the guide's path {path!r}: notebook cell {i} ({first[:70]!r}) raised:\n{message}",
                            pytrace=False)

    outputs = run.cells[-1].outputs
    views = [o["data"][WIDGET_MIME] for o in outputs if WIDGET_MIME in o.get("data", {})]
    assert views, (f"{stem}: the widget cell displayed no widget; its outputs: "
                   f"{[o.get('output_type') for o in outputs]}")
    state = client.widget_state
    assert all(v["model_id"] in state for v in views), f"{stem}: the widget's model is not in the kernel's widget state"
    shown = [s for s in state.values() if s.get("_model_name") == "OutputModel"]
    errors = [o for s in shown for o in s.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{stem}: the widget's first draw raised: {[e.get('ename') + ': ' + e.get('evalue') for e in errors]}"
    assert any(s.get("outputs") for s in shown) or any(
        s.get("_model_name") == "HTMLModel" and s.get("value") for s in state.values()), (
        f"{stem}: the widget drew nothing at build time (no Output with content, no HTML with a value)")


def test_a_cell_whose_reply_is_late_is_waited_for_then_run_again_once_the_kernel_is_idle(monkeypatch, capsys):
    # the lost reply cannot be provoked on purpose; a cell slower than the probe takes the same path: the probe
    # waits until the kernel is idle, then the cell runs once more and its reply arrives
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setattr(sys.modules[__name__], "REPLY_PROBE_S", 1)
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "1")
    cells = [nbformat.v4.new_code_cell("import time\nruns = globals().get('runs', 0) + 1\ntime.sleep(3)\nprint(runs)")]
    run = nbformat.v4.new_notebook(cells=cells)
    client = NotebookClient(run, timeout=CELL_TIMEOUT_S, kernel_name="python3")
    with client.setup_kernel():
        run_cell(client, run.cells[0], 0)
    assert "the cell ran again" in capsys.readouterr().out
    assert [o["text"].strip() for o in run.cells[0].outputs if o.get("name") == "stdout"][-1] == "2"
