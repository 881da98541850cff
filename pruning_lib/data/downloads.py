"""Torchvision datasets that may download (Oxford-IIIT Pet, CIFAR-10), relabelled to the course's classes.

Nothing is downloaded unless ``download=True``; a dataset that is missing, incomplete or fails to
download raises one ``DatasetUnavailableError`` saying where it was expected and how to get it.
``RelabeledDataset`` keeps some items of a torchvision dataset and renames their labels.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from .fashion import check_classes

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
PETS_URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


class DatasetUnavailableError(RuntimeError):
    """A dataset is not on disk and could not (or may not) be downloaded."""


class RelabeledDataset(Dataset):
    """A view of ``base`` (items ``(x, y)``) keeping ``indices`` and renaming labels by ``label_map``."""

    def __init__(
        self,
        base: Dataset,
        label_map: dict[int, int],
        classes: Sequence[str],
        indices: Sequence[int] | None = None,
    ) -> None:
        self.base, self.label_map, self.classes = base, dict(label_map), list(classes)
        self.indices = list(range(len(base))) if indices is None else list(indices)
        base_targets = getattr(base, "targets", None)
        self.targets = (
            None if base_targets is None else [label_map[int(base_targets[i])] for i in self.indices]
        )

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        x, y = self.base[self.indices[index]]
        return x, self.label_map[int(y)]


def _unavailable(
    name: str, expected: Path, source: str, download: bool, err: BaseException
) -> DatasetUnavailableError:
    """The error for a dataset that is not on disk (download=False) or failed to download."""
    if download:
        what = f"downloading {name} from {source} into {expected} failed ({type(err).__name__}: {err})"
    else:
        what = f"{name} was not found (or is incomplete) at {expected} and download=False"
    return DatasetUnavailableError(
        f"{what}. Either run once with download=True on a machine with internet access (it fetches "
        f"{source}), or copy an existing {expected.name} folder to {expected}."
    )


def _load_torchvision(
    factory: Callable[[], Dataset], name: str, expected: Path, source: str, download: bool
) -> Dataset:
    """Call a torchvision dataset constructor, turning missing data and failed downloads into one error."""
    try:
        return factory()
    except (OSError, RuntimeError, tarfile.TarError) as err:
        raise _unavailable(name, expected, source, download, err) from err


def oxford_pets_cats_vs_dogs(
    root: str | os.PathLike,
    split: str = "trainval",
    *,
    download: bool = False,
    transform: Callable[[Image.Image], Any] | None = None,
) -> RelabeledDataset:
    """Oxford-IIIT Pet (37 breeds) as cat=0 vs dog=1, from ``root/oxford-iiit-pet/{images,annotations}``.

    Wraps ``torchvision.datasets.OxfordIIITPet(target_types="binary-category")``, whose labels come
    from the species column of the annotation files (1=cat, 2=dog, minus one); the mapping to
    cat=0, dog=1 is built from its ``bin_class_to_idx`` so it stays right if torchvision changes.
    Images are RGB PIL images before ``transform``. ``split``: ``"trainval"`` (3680) or ``"test"`` (3669).
    """
    from torchvision.datasets import OxfordIIITPet

    if split not in ("trainval", "test"):
        raise ValueError(f"split={split!r} is not valid; use 'trainval' or 'test'")
    base = _load_torchvision(
        lambda: OxfordIIITPet(
            root, split=split, target_types="binary-category", transform=transform, download=download
        ),
        "Oxford-IIIT Pet",
        Path(root) / "oxford-iiit-pet",
        PETS_URL + ": images.tar.gz and annotations.tar.gz, ~800 MB",
        download,
    )
    to_ours = {base.bin_class_to_idx["Cat"]: 0, base.bin_class_to_idx["Dog"]: 1}
    return RelabeledDataset(base, to_ours, ["cat", "dog"])


def _cifar_classes(classes: Sequence[int | str] | None) -> list[int]:
    """CIFAR-10 class indices from names or indices (validated); ``None`` means all ten."""
    if classes is None:
        return list(range(len(CIFAR10_CLASSES)))
    indices = []
    for c in classes:
        if isinstance(c, str):
            if c not in CIFAR10_CLASSES:
                raise ValueError(f"class {c!r} is not a CIFAR-10 class; use one of {CIFAR10_CLASSES}")
            c = CIFAR10_CLASSES.index(c)
        indices.append(c)
    return check_classes(indices, CIFAR10_CLASSES)


def cifar10(
    root: str | os.PathLike,
    split: str = "train",
    *,
    classes: Sequence[int | str] | None = None,
    download: bool = False,
    transform: Callable[[Image.Image], Any] | None = None,
) -> RelabeledDataset:
    """CIFAR-10 from ``root/cifar-10-batches-py``, optionally only some classes.

    Args:
        split: ``"train"`` (50 000) or ``"test"`` (10 000).
        classes: names or indices to keep, e.g. ``("cat", "dog")``; labels become 0..len(classes)-1
            in this order. ``None``: all ten with their usual labels.
    """
    from torchvision.datasets import CIFAR10

    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} is not valid; use 'train' or 'test'")
    chosen = _cifar_classes(classes)
    base = _load_torchvision(
        lambda: CIFAR10(root, train=(split == "train"), transform=transform, download=download),
        "CIFAR-10", Path(root) / "cifar-10-batches-py", CIFAR10_URL + ", ~170 MB", download,
    )
    keep = [i for i, y in enumerate(base.targets) if y in chosen]
    to_ours = {c: i for i, c in enumerate(chosen)}
    return RelabeledDataset(base, to_ours, [CIFAR10_CLASSES[c] for c in chosen], keep)
