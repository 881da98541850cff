"""Seeded, reproducible splits and loaders: the same seed always gives the same split and batch order.

``split_train_val`` is stratified when labels are cheap to read; ``split_three`` is the per-label seeded
train/val/test split it shares with the image folders; ``split_per_class`` deals out so many images per class;
``make_loader`` seeds shuffling and workers.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset


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


def check_fraction(val_fraction: float) -> None:
    """Raise unless 0 < val_fraction < 1."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction} must be strictly between 0 and 1 (e.g. 0.2)")


def _shuffled_by_label(labels: np.ndarray, seed: int) -> Iterator[tuple[int, list[int]]]:
    """Each label (ascending) with the indices that hold it, shuffled by one ``torch.Generator`` seeded with
    `seed` (so the same labels and seed always give the same order)."""
    generator = torch.Generator().manual_seed(seed)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        yield int(label), members[torch.randperm(len(members), generator=generator).numpy()].tolist()


def split_three(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """Indices of ``"train"``, ``"val"`` and ``"test"`` (sorted), per label after a seeded shuffle: the first
    ``round(n * test_fraction)`` go to test, the next ``round(n * val_fraction)`` to val, the rest to train."""
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for _, members in _shuffled_by_label(labels, seed):
        n_test = int(len(members) * test_fraction + 0.5)
        n_val = int(len(members) * val_fraction + 0.5)
        parts["test"] += members[:n_test]
        parts["val"] += members[n_test:n_test + n_val]
        parts["train"] += members[n_test + n_val:]
    return {k: sorted(v) for k, v in parts.items()}


def split_train_val(
    dataset: Dataset, val_fraction: float = 0.2, *, seed: int = 0
) -> tuple[Subset, Subset]:
    """Split ``dataset`` into disjoint (train, val) Subsets, the same for the same seed.

    Stratified (each label keeps its share) when labels are cheap to read (``.targets``, a
    TensorDataset's second tensor, a Subset of those); otherwise a plain seeded random split.
    """
    check_fraction(val_fraction)
    labels = _labels_of(dataset)
    if labels is None:
        labels = np.zeros(len(dataset), dtype=np.int64)
    parts = split_three(labels, val_fraction, 0.0, seed)
    train, val = parts["train"], parts["val"]
    if not train or not val:
        raise ValueError(
            f"val_fraction={val_fraction} leaves an empty split of a dataset of {len(dataset)} items; "
            "use more data or a val_fraction nearer 0.5"
        )
    return Subset(dataset, train), Subset(dataset, val)


def split_per_class(dataset: Dataset, per_class: list[int | None], *, seed: int = 0) -> list[Subset]:
    """Disjoint Subsets with ``per_class[i]`` images of every class each (``None``: all that are left).

    Each class's images are shuffled with ``torch.Generator().manual_seed(seed)`` and dealt out in
    order, so the same seed always gives the same parts, and a part of ``None`` (the last, say)
    takes the rest.  For example ``[200, 200, None]`` gives train, val and "everything else".

    Raises:
        ValueError: the labels cannot be read cheaply, or a class has fewer images than asked.
    """
    labels = _labels_of(dataset)
    if labels is None:
        raise ValueError(f"split_per_class needs labels it can read (.targets or a TensorDataset); "
                         f"{type(dataset).__name__} has none")
    parts: list[list[int]] = [[] for _ in per_class]
    for label, members in _shuffled_by_label(labels, seed):
        asked = sum(n for n in per_class if n is not None)
        if asked > len(members):
            raise ValueError(f"class {label} has {len(members)} images; {per_class} asks for {asked}")
        start = 0
        for part, n in zip(parts, per_class):
            stop = len(members) if n is None else start + n
            part += members[start:stop]
            start = stop
    return [Subset(dataset, sorted(p)) for p in parts]


def _seed_worker(worker_id: int) -> None:
    """Seed numpy and random in a DataLoader worker from its torch seed (set by the loader's generator)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0, num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader whose shuffling and worker seeds come from ``torch.Generator().manual_seed(seed)``.

    With `num_workers` > 0 the workers stay alive between passes (``persistent_workers``); `pin_memory`
    speeds up copies to a CUDA GPU.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer, e.g. 64")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=_seed_worker if num_workers > 0 else None,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )
