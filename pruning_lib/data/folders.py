"""Labelled image folders on disk: Kaggle's Dogs vs Cats layout and one folder per class.

``kaggle_dogs_vs_cats`` reads labels from file names (``cat.<n>.jpg`` / ``dog.<n>.jpg``) and splits
them into train/val by a seeded per-class shuffle; ``image_folder`` takes labels from folder names.
Both return an ``ImageFileDataset`` and explain, when nothing matches, what layout was expected.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .images import IMAGE_EXTENSIONS, ImageFileDataset, image_files
from .splits import check_fraction, split_three

KAGGLE_URL = "https://www.kaggle.com/c/dogs-vs-cats/data"
KAGGLE_NAME = re.compile(r"^(cat|dog)\.(\d+)\.(jpe?g|png|bmp|gif|webp|tiff?)$", re.IGNORECASE)
KAGGLE_LAYOUT = "root/train/cat.0.jpg, root/train/dog.0.jpg, ... (or root itself holding those files)"


def _parse_kaggle(files: Sequence[Path]) -> tuple[list[tuple[Path, int, int]], list[Path]]:
    """``(path, label, number)`` for files named cat.<n>.<ext> / dog.<n>.<ext> (cat=0, dog=1); other files."""
    matched, other = [], []
    for path in files:
        m = KAGGLE_NAME.match(path.name)
        if m:
            matched.append((path, int(m.group(1).lower() == "dog"), int(m.group(2))))
        else:
            other.append(path)
    return matched, other


def _kaggle_not_found(root: Path, seen: Sequence[Path]) -> ValueError:
    """The error for a folder without Kaggle-named images, with a hint from what was there."""
    if not seen:
        found = "they hold no files"
    else:
        found = f"found {len(seen)} other files, e.g. {', '.join(p.name for p in seen[:3])}"
    hint = ""
    if any((root / name).is_dir() for name in ("cat", "dog", "Cat", "Dog")):
        hint = " This looks like one folder per class: use image_folder(root) instead."
    elif seen and all(p.stem.isdigit() for p in seen[:20]):
        hint = " Files named <number>.jpg are Kaggle's unlabelled test1 set: point root at train instead."
    return ValueError(
        f"no images named cat.<number>.jpg or dog.<number>.jpg in {root} or {root / 'train'} "
        f"({found}). Expected the Kaggle layout {KAGGLE_LAYOUT}.{hint}"
    )


def _kaggle_scan(root: Path) -> list[tuple[Path, int, int]]:
    """Kaggle-named images under ``root/train`` or ``root``; warns about files with other names."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"Kaggle Dogs vs Cats folder {root} does not exist (or is not a folder). Expected {KAGGLE_LAYOUT}: unzip "
            f"train.zip from {KAGGLE_URL} and pass the folder that contains train/."
        )
    seen: list[Path] = []
    for folder in (root / "train", root):
        if folder.is_dir():
            matched, other = _parse_kaggle(image_files(folder))
            if matched:
                if other:
                    warnings.warn(
                        f"ignored {len(other)} files in {folder} not named cat.<number>.jpg or "
                        f"dog.<number>.jpg, e.g. {', '.join(p.name for p in other[:3])}",
                        stacklevel=3,
                    )
                return matched
            seen += other
    raise _kaggle_not_found(root, seen)


def kaggle_dogs_vs_cats(
    root: str | os.PathLike,
    split: str = "train",
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.0,
    seed: int = 0,
    transform: Callable[[Image.Image], Any] | None = None,
    verify: bool = True,
) -> ImageFileDataset:
    """Kaggle Dogs vs Cats (``root/train/cat.0.jpg``, ...), labels cat=0, dog=1.

    Kaggle's ``test1/`` has no labels, so every split comes from the labelled files: each class's files,
    in order of their number, are shuffled with ``torch.Generator().manual_seed(seed)``; the first
    ``round(n * test_fraction)`` go to ``"test"``, the next ``round(n * val_fraction)`` to ``"val"``, the
    rest to ``"train"``.  The split depends only on the file names, seed and fractions, so the splits
    never overlap and together cover every labelled file.

    Args:
        root: the folder holding ``train/``, or the folder holding the jpgs directly.
        split: ``"train"``, ``"val"`` or ``"test"`` (the last needs ``test_fraction > 0``).
        transform: applied to each RGB PIL image, e.g. ``imagenet_transforms(train=True)``.
        verify: decode every file of the split now (JPEGs at 1/8 scale, about 1 ms per Kaggle image)
            and skip unreadable ones with a ``SkippedFilesWarning``; ``False`` defers errors to loading.

    Raises:
        ValueError: a class with no images (cats only, say), an empty split, bad fractions.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split={split!r} is not valid; use 'train', 'val' or 'test'")
    check_fraction(val_fraction)
    if not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise ValueError(f"test_fraction={test_fraction} must be in [0, 1) and leave images for training "
                         f"(val_fraction + test_fraction < 1)")
    files = sorted(_kaggle_scan(Path(root)), key=lambda f: (f[1], f[2], f[0].name))
    labels = np.array([label for _, label, _ in files])
    for label, name in enumerate(("cat", "dog")):
        if not (labels == label).any():
            raise ValueError(f"{root} has no {name} images (no {name}.<number>.jpg among {len(files)} files): "
                             "a cats-vs-dogs task needs both classes")
    chosen = [(files[i][0], files[i][1]) for i in split_three(labels, val_fraction, test_fraction, seed)[split]]
    if not chosen:
        raise ValueError(
            f"the {split!r} split of {len(files)} files in {root} is empty with val_fraction={val_fraction}, "
            f"test_fraction={test_fraction}; add images or change the fractions"
        )
    return ImageFileDataset(chosen, ["cat", "dog"], transform, verify=verify)


def image_folder(
    root: str | os.PathLike,
    transform: Callable[[Image.Image], Any] | None = None,
    *,
    verify: bool = True,
    split: str | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> ImageFileDataset:
    """One folder per class (``root/cat/*.jpg``, ``root/dog/*.jpg``); classes are the sorted folder names.

    Files with image extensions (``IMAGE_EXTENSIONS``) are taken from each class folder and its
    subfolders; unreadable ones are skipped as in ``kaggle_dogs_vs_cats``.  With `split` (``"train"``,
    ``"val"`` or ``"test"``) only that part is kept, split per class exactly as `kaggle_dogs_vs_cats` does
    (`split_three`: seeded, disjoint, together covering every file).
    """
    root = Path(root)
    layout = "root/<class>/<image>.jpg, e.g. root/cat/1.jpg and root/dog/1.jpg"
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist (or is not a folder); expected {layout}")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    per_class = {
        d.name: sorted(p for p in d.rglob("*") if (p.is_file() or (p.is_symlink() and not p.exists()))
                       and p.suffix.lower() in IMAGE_EXTENSIONS)
        for d in class_dirs
    }
    per_class = {name: files for name, files in per_class.items() if files}
    if not per_class:
        raise ValueError(
            f"no class folders with images ({', '.join(IMAGE_EXTENSIONS)}) in {root}; expected {layout}"
        )
    classes = sorted(per_class)
    if split is not None and len(classes) < 2:
        raise ValueError(f"{root} has one class folder ({classes[0]}): a classification task needs two or more")
    samples = [(p, i) for i, name in enumerate(classes) for p in per_class[name]]
    if split is not None:
        if split not in ("train", "val", "test"):
            raise ValueError(f"split={split!r} is not valid; use 'train', 'val' or 'test'")
        labels = np.array([label for _, label in samples])
        samples = [samples[i] for i in split_three(labels, val_fraction, test_fraction, seed)[split]]
        if not samples:
            raise ValueError(f"the {split!r} split of {root} is empty with val_fraction={val_fraction}, "
                             f"test_fraction={test_fraction}; add images or change the fractions")
    return ImageFileDataset(samples, classes, transform, verify=verify)
