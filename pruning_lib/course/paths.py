"""Where things live: the repository's reports/, checkpoints/ and build/ folders, whatever the working directory."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REPO_ROOT", "build_dir", "checkpoints_dir", "reports_dir", "shown"]

_PACKAGE_PARENT = Path(__file__).resolve().parents[2]
REPO_ROOT = _PACKAGE_PARENT if (_PACKAGE_PARENT / "pyproject.toml").exists() else Path.cwd()


def _folder(env: str, default: str) -> Path:
    """``$env`` (``~`` expanded) or <repo>/default, created if missing; a clear error if it is a file."""
    path = Path(os.environ.get(env) or REPO_ROOT / default).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{env}={path} is a file, not a folder; point {env} at a folder "
                                 f"(or unset it to use {REPO_ROOT / default})")
    path.mkdir(parents=True, exist_ok=True)
    return path


def reports_dir() -> Path:
    """Machine-readable results of the notebooks (``$PRUNING_REPORTS_DIR`` or <repo>/reports)."""
    return _folder("PRUNING_REPORTS_DIR", "reports")


def checkpoints_dir() -> Path:
    """Baselines and pruned models (``$PRUNING_CHECKPOINT_DIR`` or <repo>/checkpoints; not committed)."""
    return _folder("PRUNING_CHECKPOINT_DIR", "checkpoints")


def build_dir() -> Path:
    """Executed notebooks and HTML from ``make demo`` (``$PRUNING_BUILD_DIR`` or <repo>/build)."""
    return _folder("PRUNING_BUILD_DIR", "build")


def shown(path: Path) -> str:
    """`path` relative to the repository when it is inside it (short and machine-independent), else in full."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
