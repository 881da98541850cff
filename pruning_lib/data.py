"""Data for the course: embedded Fashion-MNIST, Kaggle Dogs vs Cats, Oxford-IIIT Pet and CIFAR-10.

Everything here reads local files. Only ``oxford_pets_cats_vs_dogs`` and ``cifar10`` may download,
and only when called with ``download=True``; when data is missing they raise
``DatasetUnavailableError`` saying what is missing and how to get it.

Image folders (Kaggle layout or one folder per class) are checked when the dataset is built: files
that PIL cannot decode are skipped, listed in ``dataset.skipped`` and counted in a
``SkippedFilesWarning``. Every image is converted to RGB (grayscale, RGBA, palette, 16-bit, CMYK).
"""

from __future__ import annotations

import os
import random
import re
import tarfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from torchvision import transforms as T

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530  # over the 60 000 official train images, pixels in [0, 1]
FASHION_FILE = Path("fashion_mnist") / "fashion_mnist_subset.npz"
FASHION_REGENERATE = "python data/make_fashion_subset.py  (see data/fashion_mnist/README.md)"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
KAGGLE_URL = "https://www.kaggle.com/c/dogs-vs-cats/data"
PETS_URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def data_dir() -> Path:
    """The course's data folder: ``$PRUNING_DATA_DIR`` if set, else the repository's ``data/``."""
    override = os.environ.get("PRUNING_DATA_DIR")
    return Path(override) if override else Path(__file__).resolve().parent.parent / "data"


DATA_DIR = data_dir()


class DatasetUnavailableError(RuntimeError):
    """A dataset is not on disk and could not (or may not) be downloaded."""


class SkippedFilesWarning(UserWarning):
    """Some image files could not be read and were left out of a dataset."""


# --------------------------------------------------------------------------- Fashion-MNIST


def _fashion_path(root: str | os.PathLike | None) -> Path:
    """Path of the subset .npz: ``root`` may be the .npz itself or a data folder holding it."""
    root = Path(root) if root is not None else data_dir()
    return root if root.suffix == ".npz" else root / FASHION_FILE


def _check_classes(classes: Sequence[int] | None, names: Sequence[str]) -> list[int]:
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
            default ``data_dir()``.

    Returns:
        ``TensorDataset(images, labels)``: images float32 (N, 1, 28, 28), pixels scaled to [0, 1] then
        normalised as (x - 0.2860) / 0.3530; labels int64 (N,). ``.classes`` lists the kept names.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} is not valid; use 'train' or 'test'")
    chosen = _check_classes(classes, FASHION_CLASSES)
    images, labels = _load_fashion_arrays(_fashion_path(root), split)
    remap = np.full(len(FASHION_CLASSES), -1, dtype=np.int64)
    remap[chosen] = np.arange(len(chosen))
    keep = remap[labels] >= 0
    x = torch.from_numpy(images[keep]).float().div_(255.0).unsqueeze(1)
    x = (x - FASHION_MEAN) / FASHION_STD
    dataset = TensorDataset(x, torch.from_numpy(remap[labels[keep]]))
    dataset.classes = [FASHION_CLASSES[c] for c in chosen]
    return dataset


# --------------------------------------------------------------------------- splits and loaders


def _labels_of(dataset: Dataset) -> np.ndarray | None:
    """Integer labels (N,) when cheap to get (``.targets``, a TensorDataset, a Subset); else None."""
    if isinstance(dataset, Subset):
        base = _labels_of(dataset.dataset)
        return None if base is None else base[np.asarray(dataset.indices, dtype=np.int64)]
    targets = getattr(dataset, "targets", None)
    if targets is None and isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        targets = dataset.tensors[1]
    if targets is None:
        return None
    labels = torch.as_tensor(targets).numpy() if not isinstance(targets, np.ndarray) else targets
    return labels if labels.ndim == 1 and len(labels) == len(dataset) else None


def _check_fraction(val_fraction: float) -> None:
    """Raise unless 0 < val_fraction < 1."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction} must be strictly between 0 and 1 (e.g. 0.2)")


def _split_indices(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Per-label seeded shuffle; round(n * val_fraction) of each label go to val. Sorted index lists."""
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[torch.randperm(len(members), generator=generator).numpy()]
        n_val = int(len(members) * val_fraction + 0.5)
        val += members[:n_val].tolist()
        train += members[n_val:].tolist()
    return sorted(train), sorted(val)


def split_train_val(
    dataset: Dataset, val_fraction: float = 0.2, *, seed: int = 0
) -> tuple[Subset, Subset]:
    """Split ``dataset`` into disjoint (train, val) Subsets, the same for the same seed.

    Stratified (each label keeps its share) when labels are cheap to read (``.targets``, a
    TensorDataset's second tensor, a Subset of those); otherwise a plain seeded random split.
    """
    _check_fraction(val_fraction)
    labels = _labels_of(dataset)
    if labels is None:
        labels = np.zeros(len(dataset), dtype=np.int64)
    train, val = _split_indices(labels, val_fraction, seed)
    if not train or not val:
        raise ValueError(
            f"val_fraction={val_fraction} leaves an empty split of a dataset of {len(dataset)} items; "
            "use more data or a val_fraction nearer 0.5"
        )
    return Subset(dataset, train), Subset(dataset, val)


def _seed_worker(worker_id: int) -> None:
    """Seed numpy and random in a DataLoader worker from its torch seed (set by the loader's generator)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0, num_workers: int = 0
) -> DataLoader:
    """A DataLoader whose shuffling and worker seeds come from ``torch.Generator().manual_seed(seed)``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer, e.g. 64")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=_seed_worker if num_workers > 0 else None,
    )


# --------------------------------------------------------------------------- images and transforms


def to_rgb(img: Image.Image) -> Image.Image:
    """A new RGB copy of ``img`` in any PIL mode: transparency is composited onto white, 16-bit
    grayscale is scaled to 8 bits, 32-bit ``I``/``F`` values are clipped to 0..255."""
    if img.mode.startswith("I;16"):
        img = Image.fromarray((np.asarray(img, dtype=np.float32) / 257.0).round().astype(np.uint8))
    elif img.mode in ("I", "F"):
        img = Image.fromarray(np.clip(np.asarray(img, dtype=np.float32), 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return img.convert("RGB")


def imagenet_transforms(train: bool, size: int = 224) -> T.Compose:
    """PIL image (any mode, any size) -> float32 (3, size, size), normalised with ImageNet mean/std.

    Train: RandomResizedCrop(size) + RandomHorizontalFlip (random via torch's global RNG).
    Eval: Resize(size * 256 / 224) on the short side, then CenterCrop(size).
    """
    if train:
        geometry = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
    else:
        geometry = [T.Resize(round(size * 256 / 224)), T.CenterCrop(size)]
    return T.Compose(
        [T.Lambda(to_rgb), *geometry, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )


def _unreadable_reason(path: Path) -> str | None:
    """None if PIL decodes ``path`` fully (JPEGs at 1/8 scale, which is fast), else why not."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about odd but readable files (EXIF, palettes)
            with Image.open(path) as img:
                img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()
    except Exception as err:  # noqa: BLE001 - PIL raises many types (OSError, SyntaxError, ...) on bad files
        return f"{type(err).__name__}: {err}"
    return None


class ImageFileDataset(Dataset):
    """Labelled image files, read lazily and converted to RGB.

    Attributes:
        samples: ``(path, label)`` pairs that passed the check.
        targets: the labels (N,) as a list of int.
        classes: class names; label ``i`` is ``classes[i]``.
        skipped: ``(path, reason)`` for each file left out because PIL could not read it.
        transform: applied to the RGB PIL image; ``None`` returns the PIL image itself.
    """

    def __init__(
        self,
        samples: Sequence[tuple[Path, int]],
        classes: Sequence[str],
        transform: Callable[[Image.Image], Any] | None = None,
        *,
        verify: bool = True,
    ) -> None:
        self.classes = list(classes)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.transform = transform
        reasons = [_unreadable_reason(p) if verify else None for p, _ in samples]
        self.samples = [s for s, r in zip(samples, reasons) if r is None]
        self.skipped = [(s[0], r) for s, r in zip(samples, reasons) if r is not None]
        self.targets = [label for _, label in self.samples]
        if self.skipped:
            examples = "; ".join(f"{p.name} ({r})" for p, r in self.skipped[:3])
            warnings.warn(
                f"skipped {len(self.skipped)} of {len(samples)} image files that could not be read, "
                f"e.g. {examples}; see dataset.skipped for all",
                SkippedFilesWarning,
                stacklevel=3,
            )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        try:
            with Image.open(path) as img:
                rgb = to_rgb(img)
        except Exception as err:  # noqa: BLE001 - name the file whatever PIL raised
            raise OSError(
                f"cannot read image {path}: {err}. Delete or replace the file, or rebuild the "
                "dataset with verify=True so that unreadable files are skipped."
            ) from err
        return (self.transform(rgb) if self.transform is not None else rgb), label


def _image_files(folder: Path) -> list[Path]:
    """Non-hidden files in ``folder`` (not recursive), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


# --------------------------------------------------------------------------- Kaggle Dogs vs Cats

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
            matched, other = _parse_kaggle(_image_files(folder))
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
    seed: int = 0,
    transform: Callable[[Image.Image], Any] | None = None,
    verify: bool = True,
) -> ImageFileDataset:
    """Kaggle Dogs vs Cats (``root/train/cat.0.jpg``, ...), labels cat=0, dog=1.

    The labelled files are split per class into train and val: each class's files, in order of their
    number, are shuffled with ``torch.Generator().manual_seed(seed)`` and the first
    ``round(n * val_fraction)`` go to ``"val"``. The split depends only on the file names, seed and
    fraction, so train and val never overlap and together cover every labelled file.

    Args:
        root: the folder holding ``train/``, or the folder holding the jpgs directly.
        split: ``"train"`` or ``"val"``.
        transform: applied to each RGB PIL image, e.g. ``imagenet_transforms(train=True)``.
        verify: decode every file of the split now (JPEGs at 1/8 scale, about 1 ms per Kaggle image)
            and skip unreadable ones with a ``SkippedFilesWarning``; ``False`` defers errors to loading.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split={split!r} is not valid; use 'train' or 'val'")
    _check_fraction(val_fraction)
    files = sorted(_kaggle_scan(Path(root)), key=lambda f: (f[1], f[2], f[0].name))
    labels = np.array([label for _, label, _ in files])
    train, val = _split_indices(labels, val_fraction, seed)
    chosen = [(files[i][0], files[i][1]) for i in (train if split == "train" else val)]
    if not chosen:
        raise ValueError(
            f"the {split!r} split of {len(files)} files in {root} is empty with "
            f"val_fraction={val_fraction}; add images or change val_fraction"
        )
    return ImageFileDataset(chosen, ["cat", "dog"], transform, verify=verify)


def image_folder(
    root: str | os.PathLike,
    transform: Callable[[Image.Image], Any] | None = None,
    *,
    verify: bool = True,
) -> ImageFileDataset:
    """One folder per class (``root/cat/*.jpg``, ``root/dog/*.jpg``); classes are the sorted folder names.

    Files with image extensions (``IMAGE_EXTENSIONS``) are taken from each class folder and its
    subfolders; unreadable ones are skipped as in ``kaggle_dogs_vs_cats``.
    """
    root = Path(root)
    layout = "root/<class>/<image>.jpg, e.g. root/cat/1.jpg and root/dog/1.jpg"
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist (or is not a folder); expected {layout}")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    per_class = {
        d.name: sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        for d in class_dirs
    }
    per_class = {name: files for name, files in per_class.items() if files}
    if not per_class:
        raise ValueError(
            f"no class folders with images ({', '.join(IMAGE_EXTENSIONS)}) in {root}; expected {layout}"
        )
    classes = sorted(per_class)
    samples = [(p, i) for i, name in enumerate(classes) for p in per_class[name]]
    return ImageFileDataset(samples, classes, transform, verify=verify)


# --------------------------------------------------------------------------- torchvision datasets


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
    return _check_classes(indices, CIFAR10_CLASSES)


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
