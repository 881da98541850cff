"""Reports: the JSON files the notebooks write to ``reports/`` (and `make demo` prints), in one style.

Each report has a builder (plain data from the run's tables), a validator (``validate_*``: returns
the report or raises ``ValueError`` naming the first thing that is wrong) and a writer (``write_*``:
validates, then `write_json`).  Every writer goes through `write_json`: strict JSON (NaN and
infinities become ``null``), written atomically (`checkpoints.atomic_write`).

- ``ranking.json`` (notebook 02): per criterion, the three Spearman columns and the one-shot curve.
- ``iterative.json`` (notebook 03): per criterion, one record per Prune–Train–Repeat iteration.
- ``summary.json`` (notebook 04): dense and pruned models' accuracy, FLOPs, parameters, size, latency.
- ``lessons.json`` (notebooks 02–04): one entry per lesson (`course.lessons`): the claim, the numbers on
  each side, the gap, its noise and whether it shows; each notebook updates its own entries.

The calibration over seeds, which the notebooks only read, is `course.calibration`'s.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..checkpoints import atomic_write, plain_value
from .paths import reports_dir

__all__ = ["build_summary", "history_records", "iterative_report", "ranking_report", "read_json", "runtimes_block",
           "read_iterative_report", "read_summary", "report_path", "update_lessons", "validate_iterative", "validate_lessons", "validate_ranking",
           "validate_summary", "write_iterative_json", "write_json", "write_ranking_json", "write_summary"]

RANKING_KEYS = ("spearman_all_l2", "spearman_all_raw", "spearman_per_layer_mean", "amounts", "accuracy")
SUMMARY_ENTRY = ("accuracy", "gflops", "params", "size_mb", "latency_ms")


def _json_safe(obj: Any) -> Any:
    """Plain Python values for JSON: numpy scalars unwrapped, NaN and infinities as None."""
    obj = plain_value(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_json(payload: Mapping[str, Any], path: str | Path) -> Path:
    """Write `payload` as strict JSON (NaN as null), atomically; returns the path."""
    text = json.dumps(_json_safe(payload), indent=1, allow_nan=False) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def read_json(path: str | Path) -> Any:
    """A report written by `write_json` (null stays None)."""
    return json.loads(Path(path).expanduser().read_text(encoding="utf-8"))


def report_path(path: str | Path | None, name: str) -> Path:
    """Where a report is read or written: `path` if given, else ``reports/<name>`` (`paths.reports_dir`)."""
    return Path(path).expanduser() if path is not None else reports_dir() / name


# --------------------------------------------------------------------------- ranking.json (notebook 02)


def ranking_report(table: pd.DataFrame, sweep_table: pd.DataFrame) -> dict[str, dict]:
    """``{criterion: {spearman_all_l2, spearman_all_raw, spearman_per_layer_mean, amounts, accuracy}}``.

    Args:
        table: `criteria.spearman_table` (rows: criteria).
        sweep_table: `sweep` (amounts as fractions of all filters, accuracy as a fraction);
            criteria in it but not in `table` (e.g. the oracle) are left out.
    """
    missing = [c for c in table.index if c not in set(sweep_table["criterion"])]
    if missing:
        raise ValueError(f"the sweep has no rows for {missing}; sweep every criterion of the Spearman table")
    report = {}
    for criterion in table.index:
        part = sweep_table[sweep_table["criterion"] == criterion].sort_values("amount")
        report[criterion] = {
            "spearman_all_l2": float(table.loc[criterion, "all_layers_l2"]),
            "spearman_all_raw": float(table.loc[criterion, "all_layers_raw"]),
            "spearman_per_layer_mean": float(table.loc[criterion, "per_layer_mean"]),
            "amounts": [float(a) for a in part["amount"]],
            "accuracy": [float(a) for a in part["accuracy"]],
        }
    validate_ranking(report)
    return report


def validate_ranking(report: Mapping) -> dict:
    """Return `report`, or raise ValueError naming its first entry that does not follow ranking.json's schema."""
    if not isinstance(report, Mapping) or not report:
        raise ValueError("ranking report must be a non-empty {criterion: {...}} mapping")
    for criterion, entry in report.items():
        if not isinstance(entry, Mapping) or set(entry) != set(RANKING_KEYS):
            got = sorted(entry) if isinstance(entry, Mapping) else type(entry).__name__
            raise ValueError(f"ranking report[{criterion!r}] must have exactly the keys {list(RANKING_KEYS)}; got {got}")
        for key in RANKING_KEYS[:3]:
            v = entry[key]
            if v is not None and (not isinstance(v, float) or not (math.isnan(v) or -1.0 - 1e-9 <= v <= 1.0 + 1e-9)):
                raise ValueError(f"ranking report[{criterion!r}][{key!r}] must be a Spearman ρ in [-1, 1] "
                                 f"(or None: undefined); got {v!r}")
        amounts, accuracy = entry["amounts"], entry["accuracy"]
        if len(amounts) != len(accuracy) or not amounts:
            raise ValueError(f"ranking report[{criterion!r}]: 'amounts' and 'accuracy' must be non-empty lists "
                             f"of the same length; got {len(amounts)} and {len(accuracy)}")
        if any(not 0.0 <= x <= 1.0 for x in [*amounts, *accuracy]):
            raise ValueError(f"ranking report[{criterion!r}]: amounts and accuracy are fractions in [0, 1]")
    return dict(report)


def write_ranking_json(report: Mapping, path: str | Path | None = None) -> Path:
    """Validate `report` (`validate_ranking`) and write it (default: ``reports/ranking.json``)."""
    return write_json(validate_ranking(report), report_path(path, "ranking.json"))



# --------------------------------------------------------------------------- iterative.json (notebook 03)


def history_records(history: pd.DataFrame) -> list[dict]:
    """The history as JSON-safe records: Python numbers, NaN as None, ``filters`` as {conv: n}."""
    cols = [c for c in history.columns if c.startswith("filters:")]
    records = []
    for row in history.to_dict(orient="records"):
        rec = {k: plain_value(v) for k, v in row.items() if k not in cols}
        rec = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()}
        rec["filters"] = {c.removeprefix("filters:"): int(row[c]) for c in cols}
        records.append(rec)
    return records


def iterative_report(histories: Mapping[str, pd.DataFrame]) -> dict[str, list[dict]]:
    """``{criterion: history_records(history)}``: the content of ``reports/iterative.json``."""
    return validate_iterative({name: history_records(h) for name, h in histories.items()})


def validate_iterative(report: Any) -> dict[str, list[dict]]:
    """Return `report`, or raise ValueError naming the first criterion whose records break iterative.json's schema."""
    if not isinstance(report, Mapping) or not report:
        raise ValueError(f"iterative report must map criterion -> list of iteration records; got {type(report).__name__}")
    for criterion, records in report.items():
        if (not isinstance(records, list) or not records
                or not all(isinstance(r, Mapping) and isinstance(r.get("filters"), Mapping) for r in records)):
            raise ValueError(f"iterative report[{criterion!r}] should be a non-empty list of records with a "
                             "'filters' dict; regenerate it with notebook 03")
    return dict(report)


def write_iterative_json(histories: Mapping[str, pd.DataFrame], path: str | Path | None = None) -> Path:
    """Write `iterative_report(histories)` (default: ``reports/iterative.json``)."""
    return write_json(iterative_report(histories), report_path(path, "iterative.json"))


def read_iterative_report(path: str | Path | None = None) -> dict[str, pd.DataFrame]:
    """Notebook 03's ``iterative.json`` as ``{criterion: history}``, one row per iteration.

    Each history has notebook 03's columns (``iteration``, ``fraction_removed``, ``params``,
    ``gflops``, accuracies, ...) and one ``filters:<conv>`` column per conv (filters left), as
    returned by `iterative.prune_train_repeat`.  Row 0 is the unpruned model.

    Raises:
        FileNotFoundError: the file is missing (run notebook 03 first).
        ValueError: the file is not a ``{criterion: [records]}`` report.
    """
    path = report_path(path, "iterative.json")
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run notebooks/03_iterative_pruning.ipynb first "
                                "(or make demo), which writes it")
    try:
        report = validate_iterative(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: {err}") from None
    histories = {}
    for criterion, records in report.items():
        rows = [{**{k: (math.nan if v is None else v) for k, v in r.items() if k != "filters"},
                 **{f"filters:{conv}": int(n) for conv, n in r["filters"].items()}} for r in records]
        histories[criterion] = pd.DataFrame(rows)
    return histories


# --------------------------------------------------------------------------- summary.json (notebook 04)


def build_summary(
    profile: str,
    dataset: str,
    model: str,
    table: pd.DataFrame,
    *,
    reference: str = "dense",
    measurement: Mapping[str, Any] | None = None,
    runtimes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``reports/summary.json``'s content from one (form, batch) slice of `side_by_side`.

    `table` is indexed by model name with ``accuracy`` (fraction), ``gflops`` (per image),
    ``params``, ``size_mb``, ``latency_ms`` (per batch) and ``speedup``; every row but `reference`
    becomes ``pruned[name]``.  `measurement` (batch size, threads, form, machine, ...) is stored
    under ``"measurement"`` so the latency can be read correctly; `runtimes` (`runtimes_block`) under
    ``"runtimes"``.
    """
    def entry(name: str, with_speedup: bool) -> dict[str, Any]:
        r = table.loc[name]
        e = {"accuracy": float(r["accuracy"]), "gflops": float(r["gflops"]), "params": int(r["params"]),
             "size_mb": float(r["size_mb"]), "latency_ms": float(r["latency_ms"])}
        if with_speedup:
            e["speedup"] = float(r["speedup"])
        return e

    summary = {"profile": profile, "dataset": dataset, "model": model, "dense": entry(reference, False),
               "pruned": {name: entry(name, True) for name in table.index if name != reference}}
    if measurement is not None:
        summary["measurement"] = dict(measurement)
    if runtimes is not None:
        summary["runtimes"] = dict(runtimes)
    return validate_summary(summary)


def runtimes_block(table: pd.DataFrame, *, batch: int, num_threads: int) -> dict[str, Any]:
    """summary.json's ``runtimes``: for each form/runtime of a `side_by_side` table at `batch`, each model's
    ``latency_ms`` and ``speedup`` against the reference in that same runtime."""
    block = {}
    for form, g in table[table["batch"] == batch].groupby("form", sort=False):
        block[form] = {"batch_size": int(batch), "num_threads": int(num_threads),
                       "models": {r["model"]: {"latency_ms": float(r["latency_ms"]), "speedup": float(r["speedup"])}
                                  for _, r in g.iterrows()}}
    return block


def _check_runtimes(block: Any) -> None:
    if not isinstance(block, dict) or not block:
        raise ValueError("summary['runtimes'] must map each runtime to {'batch_size', 'num_threads', 'models'}")
    for name, entry in block.items():
        where = f"summary['runtimes'][{name!r}]"
        if not isinstance(entry, dict) or not {"batch_size", "num_threads", "models"} <= set(entry):
            raise ValueError(f"{where} must have 'batch_size', 'num_threads' and 'models'")
        _check_number(f"{where}['batch_size']", entry["batch_size"], integer=True, positive=True)
        _check_number(f"{where}['num_threads']", entry["num_threads"], integer=True, positive=True)
        for model, times in entry["models"].items():
            for key in ("latency_ms", "speedup"):
                _check_number(f"{where}['models'][{model!r}][{key!r}]", times.get(key) if isinstance(times, dict)
                              else None, positive=True)


def _check_number(where: str, value: Any, *, low: float = 0.0, high: float = math.inf,
                  integer: bool = False, positive: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"{where} = {value!r} must be {'an int' if integer else 'a number'}")
    if not math.isfinite(value) or not low <= value <= high or (positive and value <= 0):
        bound = f"in [{low:g}, {high:g}]" if math.isfinite(high) else ("> 0" if positive else f">= {low:g}")
        raise ValueError(f"{where} = {value!r} must be finite and {bound}"
                         + (" (accuracy is a fraction, not a percentage)" if where.endswith("['accuracy']") else ""))


def _check_entry(where: str, entry: Any, pruned: bool) -> None:
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a dict with {list(SUMMARY_ENTRY)}; got {type(entry).__name__}")
    needed = SUMMARY_ENTRY + (("speedup",) if pruned else ())
    missing = [k for k in needed if k not in entry]
    if missing:
        raise ValueError(f"{where} is missing {missing}")
    _check_number(f"{where}['accuracy']", entry["accuracy"], high=1.0)
    _check_number(f"{where}['gflops']", entry["gflops"], positive=True)
    _check_number(f"{where}['params']", entry["params"], integer=True, positive=True)
    _check_number(f"{where}['size_mb']", entry["size_mb"], positive=True)
    _check_number(f"{where}['latency_ms']", entry["latency_ms"], positive=True)
    if pruned:
        _check_number(f"{where}['speedup']", entry["speedup"], positive=True)


def validate_summary(summary: Any) -> dict[str, Any]:
    """Check `summary` against the schema of ``reports/summary.json``; return it, or raise ``ValueError``.

    Schema: ``{"profile", "dataset", "model": str, "dense": {"accuracy", "gflops", "params",
    "size_mb", "latency_ms"}, "pruned": {criterion: {... the same ..., "speedup"}}}``; accuracy a
    fraction in [0, 1], every number finite, counts and times positive; optional ``"runtimes"``:
    ``{runtime: {"batch_size", "num_threads", "models": {name: {"latency_ms", "speedup"}}}}``.  Extra keys
    are allowed.
    """
    if not isinstance(summary, dict):
        raise ValueError(f"summary must be a dict; got {type(summary).__name__}")
    missing = [k for k in ("profile", "dataset", "model", "dense", "pruned") if k not in summary]
    if missing:
        raise ValueError(f"summary is missing {missing}")
    for key in ("profile", "dataset", "model"):
        if not isinstance(summary[key], str) or not summary[key]:
            raise ValueError(f"summary['{key}'] = {summary[key]!r} must be a non-empty string")
    _check_entry("summary['dense']", summary["dense"], pruned=False)
    if not isinstance(summary["pruned"], dict) or not summary["pruned"]:
        raise ValueError("summary['pruned'] must map at least one criterion to its entry")
    for name, entry in summary["pruned"].items():
        _check_entry(f"summary['pruned'][{name!r}]", entry, pruned=True)
    if "runtimes" in summary:
        _check_runtimes(summary["runtimes"])
    return summary


def write_summary(summary: Mapping[str, Any], path: str | Path | None = None) -> Path:
    """Validate `summary` (`validate_summary`) and write it (default ``reports/summary.json``)."""
    return write_json(validate_summary(dict(summary)), report_path(path, "summary.json"))


def read_summary(path: str | Path | None = None) -> dict[str, Any]:
    """``reports/summary.json`` (notebook 04's measurement), validated; FileNotFoundError names who writes it."""
    where = report_path(path, "summary.json")
    if not where.exists():
        raise FileNotFoundError(f"{where} is missing: notebook 04 writes it (run it first)")
    return validate_summary(read_json(where))


# --------------------------------------------------------------------------- lessons.json (notebooks 02-04)


LESSON_KEYS = ("claim", "measured", "gap_points", "noise_points", "threshold_points", "shows", "reported_only")


def validate_lessons(report: Any) -> dict[str, Any]:
    """Return `report` (``{lesson: entry}``), or raise ValueError naming the first entry that breaks the schema."""
    if not isinstance(report, Mapping) or not report:
        raise ValueError("lessons report must be a non-empty {lesson: entry} mapping")
    for name, entry in report.items():
        if not isinstance(entry, Mapping) or set(LESSON_KEYS) - set(entry):
            got = sorted(entry) if isinstance(entry, Mapping) else type(entry).__name__
            raise ValueError(f"lessons report[{name!r}] must have the keys {list(LESSON_KEYS)}; got {got}")
        if not isinstance(entry["shows"], bool) or not isinstance(entry["reported_only"], bool):
            raise ValueError(f"lessons report[{name!r}]: 'shows' and 'reported_only' are computed booleans")
        for key in ("gap_points", "noise_points", "threshold_points"):
            v = entry[key]
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ValueError(f"lessons report[{name!r}][{key!r}] must be a number of points; got {v!r}")
        if not isinstance(entry["measured"], Mapping):
            raise ValueError(f"lessons report[{name!r}]['measured'] must map each side to its numbers")
    return dict(report)


def update_lessons(entries: Mapping[str, Mapping[str, Any]], path: str | Path | None = None) -> dict[str, Any]:
    """Add or replace `entries` in ``reports/lessons.json`` (each notebook writes its own lessons); return the whole report.

    An unreadable or invalid existing file is replaced, not merged.
    """
    path = report_path(path, "lessons.json")
    with _locked(path):                       # two notebooks may add their lessons at once (make demo's lanes)
        current: dict[str, Any] = {}
        if path.exists():
            try:
                current = validate_lessons(read_json(path))
            except (ValueError, json.JSONDecodeError):
                current = {}
        report = validate_lessons({**current, **{k: dict(v) for k, v in entries.items()}})
        write_json(report, path)
    return report


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``.<name>.lock`` beside `path` (POSIX; elsewhere nothing is locked)."""
    try:
        import fcntl
    except ImportError:                       # Windows: make demo runs one notebook at a time there
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
