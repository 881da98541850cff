"""Image files as a dataset: every image converted to RGB, unreadable files skipped with a warning.

``to_rgb`` handles any PIL mode, ``imagenet_transforms`` turns a PIL image into a normalised tensor,
``ImageFileDataset`` reads labelled files lazily after checking (once, at build time) that PIL can
decode them; the skipped ones are listed in ``dataset.skipped`` and counted in a ``SkippedFilesWarning``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision import transforms as T

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class SkippedFilesWarning(UserWarning):
    """Some image files could not be read and were left out of a dataset."""


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
    if path.is_symlink() and not path.exists():
        return "a broken or looping symbolic link"
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
                rgb = to_rgb(ImageOps.exif_transpose(img))     # a phone photo's EXIF orientation, applied
        except Exception as err:  # noqa: BLE001 - name the file whatever PIL raised
            raise OSError(
                f"cannot read image {path}: {err}. Delete or replace the file, or rebuild the "
                "dataset with verify=True so that unreadable files are skipped."
            ) from err
        return (self.transform(rgb) if self.transform is not None else rgb), label


def image_files(folder: Path) -> list[Path]:
    """Non-hidden files in ``folder`` (not recursive), sorted by name; broken or looping symlinks are kept,
    so that the dataset counts them as skipped instead of losing them silently."""
    return sorted(p for p in folder.iterdir()
                  if not p.name.startswith(".") and (p.is_file() or (p.is_symlink() and not p.exists())))
