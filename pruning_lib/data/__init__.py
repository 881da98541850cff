"""Data for the course: embedded Fashion-MNIST, Kaggle Dogs vs Cats, Oxford-IIIT Pet and CIFAR-10.

Everything here reads local files. Only ``oxford_pets_cats_vs_dogs`` and ``cifar10`` may download,
and only when called with ``download=True``; when data is missing they raise
``DatasetUnavailableError`` saying what is missing and how to get it.

Image folders (Kaggle layout or one folder per class) are checked when the dataset is built: files
that PIL cannot decode are skipped, listed in ``dataset.skipped`` and counted in a
``SkippedFilesWarning``. Every image is converted to RGB (grayscale, RGBA, palette, 16-bit, CMYK).

Modules (everything public is re-exported here, so ``from pruning_lib import data`` is enough):

- ``locations``: where data lives: ``data_dir()`` (``$PRUNING_DATA_DIR``) and ``full_data_dir()``.
- ``fashion``: the embedded Fashion-MNIST subset as tensors, and class-index checks.
- ``splits``: seeded stratified splits (a fraction, or so many images per class) and seeded DataLoaders.
- ``images``: RGB conversion, ImageNet transforms, ``ImageFileDataset`` that skips unreadable files.
- ``folders``: labelled image folders: Kaggle Dogs vs Cats layout and one folder per class.
- ``downloads``: Oxford-IIIT Pet and CIFAR-10 via torchvision, relabelled; ``DatasetUnavailableError``.
"""

from __future__ import annotations

from .downloads import (
    CIFAR10_CLASSES,
    CIFAR10_URL,
    PETS_URL,
    DatasetUnavailableError,
    RelabeledDataset,
    cifar10,
    oxford_pets_cats_vs_dogs,
)
from .fashion import (
    FASHION_CLASSES,
    FASHION_FILE,
    FASHION_MEAN,
    FASHION_REGENERATE,
    FASHION_FULL_DIR,
    FASHION_STD,
    fashion_mnist,
    fashion_mnist_full,
)
from .folders import KAGGLE_LAYOUT, KAGGLE_NAME, KAGGLE_URL, image_folder, kaggle_dogs_vs_cats
from .images import (
    IMAGE_EXTENSIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFileDataset,
    SkippedFilesWarning,
    imagenet_transforms,
    to_rgb,
)
from .locations import REPO_DATA_DIR, data_dir, full_data_dir
from .splits import make_loader, split_per_class, split_train_val

__all__ = [
    "CIFAR10_CLASSES", "CIFAR10_URL", "DatasetUnavailableError", "FASHION_CLASSES", "FASHION_FILE",
    "FASHION_FULL_DIR", "FASHION_MEAN", "FASHION_REGENERATE", "FASHION_STD", "IMAGENET_MEAN", "IMAGENET_STD",
    "IMAGE_EXTENSIONS", "ImageFileDataset", "KAGGLE_LAYOUT", "KAGGLE_NAME", "KAGGLE_URL", "PETS_URL",
    "REPO_DATA_DIR", "RelabeledDataset", "SkippedFilesWarning", "cifar10", "data_dir", "fashion_mnist",
    "fashion_mnist_full", "full_data_dir", "image_folder", "imagenet_transforms", "kaggle_dogs_vs_cats", "make_loader",
    "oxford_pets_cats_vs_dogs", "split_per_class", "split_train_val", "to_rgb",
]
