"""The calibration over seeds, read back: what the notebooks print beside their own run's numbers.

``benchmarks/calibrate_lessons.py`` runs notebooks 01-03 for several seeds (and times each seed's headline) and
writes ``build/calibration.json``; a copy is committed as ``benchmarks/results/calibration.json`` (`CALIBRATION`).
The notebooks only read it: `lesson_over_seeds` gives one lesson's gap, noise and outcome in every seed, and
`narrate.over_seeds` says it in words beside the run's own entry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from . import lessons
from .paths import REPO_ROOT

__all__ = ["CALIBRATION", "lesson_over_seeds", "read_calibration"]


#: Where the calibration over seeds is committed: ``benchmarks/calibrate_lessons.py`` writes ``build/calibration.json``
#: (``{"machine", "overrides", "results": [{"seed", "lessons": {name: entry}, "seconds"} or {"seed", "error"}]}``),
#: and a copy is committed here.
CALIBRATION = REPO_ROOT / "benchmarks" / "results" / "calibration.json"


def read_calibration(path: str | Path | None = None) -> dict[str, Any]:
    """The calibration over seeds (default `CALIBRATION`).

    Raises:
        FileNotFoundError: the file is missing; the message says which command writes it.
        ValueError: the file is not ``{"results": [{"seed": ..., ...}, ...], ...}``.
    """
    where = Path(path).expanduser() if path is not None else CALIBRATION
    if not where.exists():
        raise FileNotFoundError(f"{_shown(where)} is missing: `python benchmarks/calibrate_lessons.py --seeds 0 1 2 3` "
                                "writes build/calibration.json (about 7 minutes per seed on 2 cores), committed as "
                                "benchmarks/results/calibration.json")
    try:
        report = json.loads(where.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{_shown(where)} is not JSON ({err})") from None
    results = report.get("results") if isinstance(report, Mapping) else None
    if not isinstance(results, list) or not all(isinstance(r, Mapping) and "seed" in r for r in results):
        raise ValueError(f"{_shown(where)} is not a calibration: expected {{'results': [{{'seed': ..., 'lessons': "
                         "{...}}, ...]}, as benchmarks/calibrate_lessons.py writes it")
    return dict(report)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def lesson_over_seeds(name: str, path: str | Path | None = None) -> pd.DataFrame:
    """One lesson of the calibration over seeds: one row per seed that measured it (index ``seed``).

    Columns: ``gap_points``, ``noise_points`` (the test set's noise of that seed's gap), ``threshold_points``,
    ``outcome`` (`lessons.outcome`: judged again by today's rule, whatever the file's ``shows`` says), and for the
    headline ``speedup``, ``flops_ratio`` and ``checks``.  ``attrs`` hold ``path``, ``machine`` (where the seeds
    ran), ``overrides`` (the profile's overrides besides the seed) and ``note``: None, or one sentence saying why
    the table is empty or short (the file is missing or unreadable, the lesson was not calibrated, a seed failed).
    Never raises for a missing or bad file: a notebook prints the note instead.
    """
    columns = ["gap_points", "noise_points", "threshold_points", "outcome"]
    try:
        report = read_calibration(path)
    except (FileNotFoundError, ValueError) as err:
        table = pd.DataFrame(columns=columns, index=pd.Index([], name="seed"))
        table.attrs.update(path=_shown(Path(path)) if path else _shown(CALIBRATION), machine=None, overrides=None,
                           note=f"No calibration over seeds: {err}.")
        return table
    rows, failed, missing = [], [], []
    for result in report["results"]:
        entry = result.get("lessons", {}).get(name) if "error" not in result else None
        if "error" in result:
            failed.append(result["seed"])
        elif entry is None:
            missing.append(result["seed"])
        else:
            m = entry.get("measured", {})
            row = {"seed": int(result["seed"]), "gap_points": entry.get("gap_points"),
                   "noise_points": entry.get("noise_points"), "threshold_points": entry.get("threshold_points"),
                   "outcome": "reported" if entry.get("reported_only") else lessons.outcome(entry)}
            if "checks" in m:
                row.update(speedup=m.get("speedup"), flops_ratio=m.get("flops_ratio"), checks=dict(m["checks"]))
            rows.append(row)
    table = pd.DataFrame(rows).set_index("seed") if rows else pd.DataFrame(columns=columns,
                                                                           index=pd.Index([], name="seed"))
    notes = []
    if not rows:
        notes.append(f"the calibration ({_shown(Path(path) if path else CALIBRATION)}) has no entry {name!r}")
    if failed:
        notes.append(f"seed(s) {', '.join(map(str, failed))} failed in the calibration")
    if missing and rows:
        notes.append(f"seed(s) {', '.join(map(str, missing))} did not measure {name!r}")
    table.attrs.update(path=_shown(Path(path)) if path else _shown(CALIBRATION), machine=report.get("machine"),
                       overrides=report.get("overrides", ""), note=_sentence("; ".join(notes)) if notes else None)
    return table
