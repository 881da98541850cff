"""The target task's data for each profile: train / val / test datasets and their loaders.

Quick profile: T-shirt/top vs Shirt from the embedded Fashion-MNIST subset.  Full profile: cats vs dogs
from Oxford-IIIT Pet (``$PRUNING_DATA_DIR/full``; downloaded only with ``PRUNING_DOWNLOAD=1``), from a
Kaggle Dogs vs Cats folder (``PRUNING_KAGGLE_DIR``), or from one folder per class (``PRUNING_IMAGE_FOLDER``).
Every source gives train, val and test.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .. import data
from .profiles import Profile, get_profile

__all__ = ["SOURCE_CLASSES", "TARGET_CLASSES", "class_names", "target_datasets", "target_loaders"]

SOURCE_CLASSES = (1, 2, 3, 4, 5, 7, 8, 9)   # Trouser, Pullover, Dress, Coat, Sandal, Sneaker, Bag, Ankle boot
TARGET_CLASSES = (0, 6)                     # T-shirt/top vs Shirt: the most confusable pair


def _full_datasets(profile: Profile) -> dict[str, torch.utils.data.Dataset]:
    root = data.full_data_dir()
    download = os.environ.get("PRUNING_DOWNLOAD", "0") == "1"
    size = profile.input_shape[-1]
    tr, ev = data.imagenet_transforms(True, size), data.imagenet_transforms(False, size)
    folder = os.environ.get("PRUNING_IMAGE_FOLDER")
    if folder:       # one folder per class: split per class like Kaggle's files
        fractions = {"val_fraction": 0.15, "test_fraction": 0.15, "seed": profile.seed}
        parts = {split: data.image_folder(folder, tr if split == "train" else ev, split=split, **fractions)
                 for split in ("train", "val", "test")}
        if len(parts["train"].classes) != 2:
            raise ValueError(f"PRUNING_IMAGE_FOLDER={folder} has {len(parts['train'].classes)} class folders "
                             f"({parts['train'].classes}); the course's networks have a two-class head")
        return parts
    kaggle = os.environ.get("PRUNING_KAGGLE_DIR")
    if kaggle:       # Kaggle's test1/ has no labels: all three splits come from the labelled train/ files
        fractions = {"val_fraction": 0.15, "test_fraction": 0.15, "seed": profile.seed}
        return {"train": data.kaggle_dogs_vs_cats(kaggle, "train", transform=tr, **fractions),
                "val": data.kaggle_dogs_vs_cats(kaggle, "val", transform=ev, **fractions),
                "test": data.kaggle_dogs_vs_cats(kaggle, "test", transform=ev, **fractions)}
    trainval = data.oxford_pets_cats_vs_dogs(root, "trainval", download=download, transform=tr)
    trainval_eval = data.oxford_pets_cats_vs_dogs(root, "trainval", download=False, transform=ev)
    train_idx, val_idx = data.split_train_val(trainval, 0.15, seed=profile.seed)
    return {"train": torch.utils.data.Subset(trainval, train_idx.indices),
            "val": torch.utils.data.Subset(trainval_eval, val_idx.indices),
            "test": data.oxford_pets_cats_vs_dogs(root, "test", download=download, transform=ev)}


def target_datasets(profile: Profile | None = None) -> dict[str, torch.utils.data.Dataset]:
    """train / val / test datasets of the target task.

    Quick profile: ``profile.train_images`` and ``profile.val_images`` images (half of each class),
    drawn with the profile's seed from the embedded T-shirt/top and Shirt images; the **test** set is
    the 2,000 official test images of the two classes plus every embedded training image left over
    (never seen by any network), so that accuracy differences of a point can be told from noise.
    """
    profile = profile or get_profile()
    if profile.dataset != "fashion-mnist":
        return _full_datasets(profile)
    pool = data.fashion_mnist("train", TARGET_CLASSES)
    per_class = [profile.train_images // len(TARGET_CLASSES), profile.val_images // len(TARGET_CLASSES), None]
    train_set, val_set, rest = data.split_per_class(pool, per_class, seed=profile.seed)
    test_set = torch.utils.data.ConcatDataset([data.fashion_mnist("test", TARGET_CLASSES), rest])
    return {"train": train_set, "val": val_set, "test": test_set}


def target_loaders(profile: Profile | None = None) -> dict[str, DataLoader]:
    """Loaders for `target_datasets`; only train is shuffled (seeded)."""
    profile = profile or get_profile()
    workers = 0 if profile.dataset == "fashion-mnist" else min(8, os.cpu_count() or 1)   # JPEG decoding in parallel
    return {split: data.make_loader(ds, profile.batch_size if split == "train" else profile.eval_batch,
                                    shuffle=split == "train", seed=profile.seed, num_workers=workers,
                                    pin_memory=torch.cuda.is_available())
            for split, ds in target_datasets(profile).items()}


def class_names(profile: Profile | None = None) -> list[str]:
    profile = profile or get_profile()
    if profile.dataset == "fashion-mnist":
        return [data.FASHION_CLASSES[c] for c in TARGET_CLASSES]
    folder = os.environ.get("PRUNING_IMAGE_FOLDER")
    if folder:
        return sorted(d.name for d in Path(folder).expanduser().iterdir() if d.is_dir() and not d.name.startswith("."))
    return ["cat", "dog"]
