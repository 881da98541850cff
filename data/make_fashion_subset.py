"""Write the small, class-balanced Fashion-MNIST subset that ships with the course.

The course prunes a CNN that tells T-shirt/top (class 0) from Shirt (class 6), with the other eight
classes kept for exercises. This script draws a seeded, class-balanced subset from the official
train and test sets and stores it as ``data/fashion_mnist/fashion_mnist_subset.npz``:

    train_images (N_train, 28, 28) uint8    train_labels (N_train,) uint8   (from the official train set)
    test_images  (N_test, 28, 28)  uint8    test_labels  (N_test,)  uint8   (from the official test set)
    class_names  (10,) str                  seed () int64

Usage (from the repository root)::

    python data/make_fashion_subset.py                       # Debian package dataset-fashion-mnist
    python data/make_fashion_subset.py --source torchvision  # torchvision download (needs internet)

The same arguments always select the same images (the zip timestamps inside the .npz differ, the
arrays do not; the script prints a SHA-256 of the arrays to compare runs).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np

# Kept in sync with pruning_lib.data.FASHION_CLASSES (this script runs without the package installed).
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_OUT = Path(__file__).resolve().parent / "fashion_mnist" / "fashion_mnist_subset.npz"
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (images: magic 2051, (N, 28, 28); labels: magic 2049, (N,)) as uint8."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, n = struct.unpack(">ii", raw[:8])
    if magic == 2049:
        return np.frombuffer(raw, dtype=np.uint8, offset=8).reshape(n)
    if magic == 2051:
        rows, cols = struct.unpack(">ii", raw[8:16])
        return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols)
    raise ValueError(f"{path} has IDX magic number {magic}; expected 2049 (labels) or 2051 (images)")


def load_debian(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 of one official split from the Debian folder."""
    image_file, label_file = (folder / name for name in IDX_FILES[split])
    for path in (image_file, label_file):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found. Install it with `apt-get install dataset-fashion-mnist`, "
                "pass --debian-dir, or use --source torchvision (downloads, needs internet)."
            )
    return read_idx(image_file), read_idx(label_file)


def load_torchvision(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 of one official split via torchvision (downloads)."""
    from torchvision.datasets import FashionMNIST

    ds = FashionMNIST(str(root), train=(split == "train"), download=True)
    return ds.data.numpy().astype(np.uint8), ds.targets.numpy().astype(np.uint8)


def balanced_subset(
    images: np.ndarray, labels: np.ndarray, counts: dict[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``counts[c]`` images of each class ``c`` without replacement, then shuffle them together."""
    chosen = []
    for cls in sorted(counts):
        pool = np.flatnonzero(labels == cls)
        if counts[cls] > len(pool):
            raise ValueError(f"class {cls} has {len(pool)} images; cannot draw {counts[cls]}")
        chosen.append(rng.choice(pool, size=counts[cls], replace=False))
    order = rng.permutation(np.concatenate(chosen))
    return images[order], labels[order]


def class_counts(targets: list[int], n_target: int, n_other: int) -> dict[int, int]:
    """Images per class: ``n_target`` for each class in ``targets``, ``n_other`` for the rest."""
    return {c: (n_target if c in targets else n_other) for c in range(len(CLASS_NAMES))}


def arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the arrays' names, shapes and bytes (stable across runs, unlike the zip bytes)."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        h.update(f"{key}{arrays[key].shape}{arrays[key].dtype}".encode())
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; defaults give the committed file."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", choices=("debian", "torchvision"), default="debian")
    p.add_argument("--debian-dir", type=Path, default=DEBIAN_DIR)
    p.add_argument("--torchvision-root", type=Path, default=Path.home() / ".cache" / "fashion_mnist")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--targets", type=int, nargs="+", default=[0, 6], help="classes drawn more often")
    p.add_argument("--target-train", type=int, default=2000, help="train images per target class")
    p.add_argument("--target-test", type=int, default=1000, help="test images per target class")
    p.add_argument("--other-train", type=int, default=600, help="train images per other class")
    p.add_argument("--other-test", type=int, default=50, help="test images per other class")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Build the subset and write it with ``np.savez_compressed``."""
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    per_split = {
        "train": class_counts(args.targets, args.target_train, args.other_train),
        "test": class_counts(args.targets, args.target_test, args.other_test),
    }
    arrays: dict[str, np.ndarray] = {}
    for split, counts in per_split.items():
        if args.source == "debian":
            images, labels = load_debian(args.debian_dir, split)
        else:
            images, labels = load_torchvision(args.torchvision_root, split)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = balanced_subset(images, labels, counts, rng)
    arrays["class_names"] = np.array(CLASS_NAMES)
    arrays["seed"] = np.array(args.seed, dtype=np.int64)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    size_mb = args.out.stat().st_size / 1e6
    print(f"wrote {args.out} ({size_mb:.2f} MB): train {arrays['train_images'].shape}, "
          f"test {arrays['test_images'].shape}; arrays sha256 {arrays_digest(arrays)}")


if __name__ == "__main__":
    main()
