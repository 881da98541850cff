"""Where the course's data lives: one environment variable, ``PRUNING_DATA_DIR``, names the data folder.

``data_dir()`` is that folder (default: the repository's ``data/``); ``full_data_dir()`` is where the
full profile's downloadable datasets go (``data_dir() / "full"``). Both are read at call time, so
changing the variable takes effect without re-importing. ``~`` is expanded.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

REPO_DATA_DIR = Path(__file__).resolve().parents[2] / "data"  # the package's parent folder's data/


def data_dir() -> Path:
    """The course's data folder: ``$PRUNING_DATA_DIR`` if set, else the repository's ``data/``."""
    override = os.environ.get("PRUNING_DATA_DIR")
    return Path(override).expanduser() if override else REPO_DATA_DIR


def full_data_dir() -> Path:
    """The full profile's downloadable datasets (Oxford-IIIT Pet, CIFAR-10): ``data_dir() / "full"``.

    The old variable ``PRUNING_DATA_ROOT``, when set, still wins (with a ``DeprecationWarning``).
    """
    old = os.environ.get("PRUNING_DATA_ROOT")
    if old:
        warnings.warn(
            "PRUNING_DATA_ROOT is deprecated; set PRUNING_DATA_DIR "
            "(the full profile's data then lives in $PRUNING_DATA_DIR/full)",
            DeprecationWarning,
            stacklevel=2,
        )
        return Path(old).expanduser()
    return data_dir() / "full"
