"""The embedded Fashion-MNIST subset: a committed .npz read into normalised tensors, no download ever.

The file is looked up in ``data_dir()`` (``$PRUNING_DATA_DIR``, default the repository's ``data/``);
when ``PRUNING_DATA_DIR`` points at a folder without it, the repository's own copy is used. Also
holds ``check_classes``, the class-index validation shared with CIFAR-10.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from . import locations

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530  # over the 60 000 official train images, pixels in [0, 1]
FASHION_FILE = Path("fashion_mnist") / "fashion_mnist_subset.npz"
FASHION_REGENERATE = "python data/make_fashion_subset.py  (see data/fashion_mnist/README.md)"
#: Debian's package ``dataset-fashion-mnist`` puts the official IDX files here.
FASHION_FULL_DIR = Path("/usr/share/datasets/fashion-mnist")
_IDX = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def _fashion_path(root: str | os.PathLike | None) -> Path:
    """Path of the subset .npz: ``root`` may be the .npz itself or a data folder holding it.

    With ``root=None`` the file is looked up in ``data_dir()``; if that is ``$PRUNING_DATA_DIR`` and
    holds no subset, the repository's own ``data/`` copy is used when present.
    """
    if root is not None:
        root = Path(root)
        return root if root.suffix == ".npz" else root / FASHION_FILE
    path = locations.data_dir() / FASHION_FILE
    fallback = locations.REPO_DATA_DIR / FASHION_FILE
    return fallback if not path.is_file() and fallback.is_file() else path


def check_classes(classes: Sequence[int] | None, names: Sequence[str]) -> list[int]:
    """Validate class indices (distinct, in range); ``None`` means all classes in order."""
    if classes is None:
        return list(range(len(names)))
    valid = ", ".join(f"{i}={name}" for i, name in enumerate(names))
    chosen = list(classes)
    for c in chosen:
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < len(names):
            raise ValueError(f"class index {c!r} is not valid; use integers from {valid}")
    if not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(f"classes={chosen} must be non-empty and without repeats; valid: {valid}")
    return [int(c) for c in chosen]


def _load_fashion_arrays(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 28, 28) and uint8 labels (N,) of ``split`` from the subset file."""
    if not path.is_file():
        raise FileNotFoundError(
            f"Fashion-MNIST subset not found at {path}. Regenerate it from the repository root with "
            f"`{FASHION_REGENERATE}`, or set PRUNING_DATA_DIR to a folder holding {FASHION_FILE}."
        )
    with np.load(path, allow_pickle=False) as npz:
        return npz[f"{split}_images"], npz[f"{split}_labels"]


def fashion_mnist(
    split: str, classes: Sequence[int] | None = None, *, root: str | os.PathLike | None = None
) -> TensorDataset:
    """The embedded Fashion-MNIST subset as tensors.

    Args:
        split: ``"train"`` (8800 images from the official train set) or ``"test"`` (2600, official test set).
        classes: original class indices to keep (0..9, see ``FASHION_CLASSES``), e.g. ``[0, 6]`` for
            T-shirt/top vs Shirt; labels become 0..len(classes)-1 in this order. ``None``: all ten.
        root: data folder holding ``fashion_mnist/fashion_mnist_subset.npz``, or the .npz itself;
            default ``data_dir()``, falling back to the repository's ``data/`` if the file is not there.

    Returns:
        ``TensorDataset(images, labels)``: images float32 (N, 1, 28, 28), pixels scaled to [0, 1] then
        normalised as (x - 0.2860) / 0.3530; labels int64 (N,). ``.classes`` lists the kept names.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} is not valid; use 'train' or 'test'")
    images, labels = _load_fashion_arrays(_fashion_path(root), split)
    return _as_dataset(images, labels, check_classes(classes, FASHION_CLASSES))


def _as_dataset(images: np.ndarray, labels: np.ndarray, chosen: list[int]) -> TensorDataset:
    """uint8 images and original labels -> normalised float32 (N, 1, 28, 28) and labels 0..len(chosen)-1."""
    remap = np.full(len(FASHION_CLASSES), -1, dtype=np.int64)
    remap[chosen] = np.arange(len(chosen))
    keep = remap[labels] >= 0
    x = torch.from_numpy(images[keep]).float().div_(255.0).unsqueeze(1)
    x = (x - FASHION_MEAN) / FASHION_STD
    dataset = TensorDataset(x, torch.from_numpy(remap[labels[keep]]))
    dataset.classes = [FASHION_CLASSES[c] for c in chosen]
    return dataset


def _read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file (images: magic 2051, (N, 28, 28); labels: magic 2049, (N,)) as uint8."""
    import gzip
    import struct

    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, n = struct.unpack(">ii", raw[:8])
    if magic == 2049:
        return np.frombuffer(raw, dtype=np.uint8, offset=8).reshape(n)
    if magic == 2051:
        rows, cols = struct.unpack(">ii", raw[8:16])
        return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols)
    raise ValueError(f"{path} has IDX magic number {magic}; expected 2049 (labels) or 2051 (images)")


def fashion_mnist_full(split: str, classes: Sequence[int] | None = None, *,
                       folder: str | os.PathLike = FASHION_FULL_DIR) -> TensorDataset:
    """The whole official Fashion-MNIST split (60,000 train / 10,000 test) from its IDX files.

    Read from Debian's ``dataset-fashion-mnist`` folder by default; used only to pretrain the quick
    profile's source network (whose checkpoint is committed), never by the notebooks.  Same
    normalisation and class remapping as `fashion_mnist`.

    Raises:
        FileNotFoundError: the IDX files are missing, with how to install them.
    """
    if split not in _IDX:
        raise ValueError(f"split={split!r} is not valid; use 'train' or 'test'")
    folder = Path(folder).expanduser()
    paths = [folder / name for name in _IDX[split]]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]} not found: install the full Fashion-MNIST with "
                                "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or pass folder= a folder "
                                f"holding {', '.join(_IDX[split])}")
    images, labels = (_read_idx(p) for p in paths)
    return _as_dataset(images, labels, check_classes(classes, FASHION_CLASSES))
