"""Tests for pruning_lib.data: embedded Fashion-MNIST, image folders, splits, offline errors.

No test touches the network: an autouse fixture makes every socket connection and DNS lookup fail,
and the download tests replace urllib's urlopen / torchvision's download_url with stubs that raise.
"""

from __future__ import annotations

import io
import shutil
import socket
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Subset, TensorDataset

from pruning_lib import data
from pruning_lib.data import (
    DatasetUnavailableError,
    SkippedFilesWarning,
    cifar10,
    fashion_mnist,
    image_folder,
    imagenet_transforms,
    kaggle_dogs_vs_cats,
    make_loader,
    oxford_pets_cats_vs_dogs,
    split_train_val,
    to_rgb,
)

NPZ = Path(__file__).resolve().parent.parent / "data" / "fashion_mnist" / "fashion_mnist_subset.npz"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Make any attempt to reach the network fail loudly."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


# --------------------------------------------------------------------------- Fashion-MNIST


@pytest.fixture(scope="module")
def raw():
    """The committed arrays, read with numpy only (the independent reference)."""
    with np.load(NPZ) as npz:
        return {k: npz[k] for k in npz.files}


def test_committed_subset_is_small_balanced_and_licensed(raw):
    assert NPZ.stat().st_size < 5.5e6
    assert (NPZ.parent / "LICENSE").read_text().count("Zalando SE") == 1
    expected_train = [2000, 600, 600, 600, 600, 600, 2000, 600, 600, 600]
    expected_test = [1000, 50, 50, 50, 50, 50, 1000, 50, 50, 50]
    assert np.bincount(raw["train_labels"]).tolist() == expected_train
    assert np.bincount(raw["test_labels"]).tolist() == expected_test
    assert raw["train_images"].shape == (8800, 28, 28) and raw["train_images"].dtype == np.uint8
    assert list(raw["class_names"]) == data.FASHION_CLASSES


@pytest.mark.parametrize("split, n", [("train", 8800), ("test", 2400)])
def test_fashion_all_classes_shapes_dtypes_and_normalisation(raw, split, n):
    ds = fashion_mnist(split)
    x, y = ds.tensors
    assert isinstance(ds, TensorDataset) and len(ds) == n
    assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.tolist() == raw[f"{split}_labels"].tolist()
    expected = (raw[f"{split}_images"].astype(np.float64) / 255 - 0.2860) / 0.3530
    np.testing.assert_allclose(x[:, 0].numpy(), expected, atol=1e-5)
    assert ds.classes == data.FASHION_CLASSES


def test_fashion_class_subset_is_remapped_in_given_order(raw):
    ds = fashion_mnist("test", classes=[6, 0])
    x, y = ds.tensors
    assert ds.classes == ["Shirt", "T-shirt/top"]
    assert torch.bincount(y).tolist() == [1000, 1000]
    for new, old in enumerate([6, 0]):
        expected = (raw["test_images"][raw["test_labels"] == old] / 255 - 0.2860) / 0.3530
        np.testing.assert_allclose(x[y == new, 0].numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("split", ["val", "Train", "", None])
def test_fashion_bad_split_names_valid_values(split):
    with pytest.raises(ValueError, match="'train' or 'test'"):
        fashion_mnist(split)


@pytest.mark.parametrize("classes", [[10], [-1], [0, 0], [], ["0"], [True], [0.0]])
def test_fashion_bad_classes_name_valid_values(classes):
    with pytest.raises(ValueError, match="T-shirt/top"):
        fashion_mnist("train", classes=classes)


def test_fashion_missing_file_says_how_to_regenerate(tmp_path):
    with pytest.raises(FileNotFoundError, match="make_fashion_subset.py") as info:
        fashion_mnist("train", root=tmp_path)
    assert str(tmp_path) in str(info.value)


def test_fashion_env_var_overrides_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNING_DATA_DIR", str(tmp_path))
    assert data.data_dir() == tmp_path
    (tmp_path / "fashion_mnist").mkdir()
    shutil.copy(NPZ, tmp_path / "fashion_mnist" / NPZ.name)
    assert len(fashion_mnist("test", [1])) == 50
    tiny = {"test_images": np.zeros((3, 28, 28), np.uint8), "test_labels": np.array([1, 1, 2], np.uint8)}
    np.savez(tmp_path / "fashion_mnist" / NPZ.name, **tiny)
    assert len(fashion_mnist("test", [1])) == 2  # the env folder's file, not the repository's


def test_data_dir_expands_user(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PRUNING_DATA_DIR", "~/course-data")
    assert data.data_dir() == tmp_path / "course-data"


def test_fashion_falls_back_to_repository_copy_when_env_folder_lacks_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNING_DATA_DIR", str(tmp_path))
    assert data.REPO_DATA_DIR / "fashion_mnist" / NPZ.name == NPZ
    assert len(fashion_mnist("test", [1])) == 50  # tmp_path holds no subset: the repository's is used
    monkeypatch.setattr(data.locations, "REPO_DATA_DIR", tmp_path / "no-repo-copy")
    with pytest.raises(FileNotFoundError, match="make_fashion_subset.py") as info:
        fashion_mnist("test")
    assert str(tmp_path / "fashion_mnist") in str(info.value)


def test_full_data_dir_defaults_to_data_dir_full(tmp_path, monkeypatch):
    monkeypatch.delenv("PRUNING_DATA_ROOT", raising=False)
    monkeypatch.delenv("PRUNING_DATA_DIR", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert data.full_data_dir() == data.REPO_DATA_DIR / "full"
        monkeypatch.setenv("PRUNING_DATA_DIR", str(tmp_path))
        assert data.full_data_dir() == tmp_path / "full"
        monkeypatch.setenv("HOME", str(tmp_path))
        monkeypatch.setenv("PRUNING_DATA_DIR", "~/d")
        assert data.full_data_dir() == tmp_path / "d" / "full"


def test_full_data_dir_old_variable_wins_with_deprecation_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNING_DATA_DIR", str(tmp_path / "new"))
    monkeypatch.setenv("PRUNING_DATA_ROOT", str(tmp_path / "old"))
    with pytest.warns(DeprecationWarning, match=r"PRUNING_DATA_ROOT is deprecated; set PRUNING_DATA_DIR"):
        assert data.full_data_dir() == tmp_path / "old"
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PRUNING_DATA_ROOT", "~/legacy")
    with pytest.warns(DeprecationWarning, match=r"\$PRUNING_DATA_DIR/full"):
        assert data.full_data_dir() == tmp_path / "legacy"


def test_fashion_root_may_be_the_npz_itself():
    assert len(fashion_mnist("test", [3, 4], root=NPZ)) == 100


# --------------------------------------------------------------------------- splits and loaders


def _toy(n_per_class=(30, 10)) -> TensorDataset:
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    return TensorDataset(torch.arange(len(y)).float().unsqueeze(1), y)


def test_split_train_val_deterministic_disjoint_covering_stratified():
    ds = _toy()
    train, val = split_train_val(ds, 0.2, seed=3)
    again_train, again_val = split_train_val(ds, 0.2, seed=3)
    assert train.indices == again_train.indices and val.indices == again_val.indices
    assert set(train.indices).isdisjoint(val.indices)
    assert sorted(train.indices + val.indices) == list(range(len(ds)))
    assert torch.bincount(ds.tensors[1][val.indices]).tolist() == [6, 2]
    other_train, _ = split_train_val(ds, 0.2, seed=4)
    assert other_train.indices != train.indices


def test_split_train_val_of_subset_uses_the_base_labels():
    train, _ = split_train_val(_toy((50, 50)), 0.5, seed=0)
    inner_train, inner_val = split_train_val(train, 0.2, seed=0)
    labels = train.dataset.tensors[1][train.indices]
    assert torch.bincount(labels[inner_val.indices]).tolist() == [5, 5]
    assert isinstance(inner_train, Subset) and len(inner_train) == 40


def test_split_train_val_without_labels_is_plain_random_split():
    ds = list(range(20))  # a plain sequence: no labels to stratify by
    train, val = split_train_val(ds, 0.25, seed=0)
    assert len(val) == 5 and sorted(train.indices + val.indices) == list(range(20))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_train_val_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_train_val(_toy(), fraction)


def test_make_loader_is_seeded():
    ds = _toy()

    def order(seed, shuffle=True):
        return torch.cat([x[:, 0] for x, _ in make_loader(ds, 8, shuffle=shuffle, seed=seed)]).tolist()

    assert order(0) == order(0)
    assert order(0) != order(1)
    assert sorted(order(0)) == list(range(40))
    assert order(0, shuffle=False) == list(range(40))
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(ds, 0, shuffle=False)


# --------------------------------------------------------------------------- images and transforms


def _image(mode: str, size=(40, 30), seed=0) -> Image.Image:
    """A random image in ``mode`` (P images carry a transparent palette index 0)."""
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    if mode == "RGBA":
        rgba = rgb.convert("RGBA")
        rgba.putalpha(Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8)))
        return rgba
    if mode == "P":
        img = rgb.quantize(16)
        img.info["transparency"] = 0
        return img
    return rgb.convert(mode)


def test_to_rgb_handles_modes():
    rgba = Image.new("RGBA", (2, 1), (10, 20, 30, 255))
    rgba.putpixel((1, 0), (0, 0, 0, 0))  # fully transparent -> white
    assert np.asarray(to_rgb(rgba)).tolist() == [[[10, 20, 30], [255, 255, 255]]]
    gray = Image.new("L", (1, 1), 77)
    assert to_rgb(gray).getpixel((0, 0)) == (77, 77, 77)
    deep = Image.fromarray(np.array([[0, 65535, 257 * 100]], dtype=np.uint16))
    assert deep.mode.startswith("I;16")
    assert np.asarray(to_rgb(deep))[0, :, 0].tolist() == [0, 255, 100]
    for mode in ["1", "L", "LA", "P", "RGBA", "CMYK", "YCbCr", "I", "F"]:
        assert to_rgb(_image(mode)).mode == "RGB"


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize(
    "img",
    [_image("L"), _image("RGBA"), _image("P"), _image("RGB", (1, 1)), Image.new("RGB", (4000, 3000), "red")],
    ids=["L", "RGBA", "P", "1x1", "4000x3000"],
)
def test_imagenet_transforms_give_224_tensors(train, img):
    out = imagenet_transforms(train)(img)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32


def test_imagenet_eval_transform_normalises_with_imagenet_stats():
    out = imagenet_transforms(train=False, size=32)(Image.new("RGB", (50, 40), "white"))
    expected = (1 - torch.tensor(data.IMAGENET_MEAN)) / torch.tensor(data.IMAGENET_STD)
    assert out.shape == (3, 32, 32)
    torch.testing.assert_close(out[:, 0, 0], expected)


# --------------------------------------------------------------------------- Kaggle Dogs vs Cats


def _save(img: Image.Image, path: Path) -> None:
    img.save(path, format="JPEG" if path.suffix == ".jpg" and img.mode in ("RGB", "L") else "PNG")


def _truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    _image("RGB", (64, 64)).save(buf, "JPEG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


GOOD_KINDS = [  # (suffix, mode, size)
    (".jpg", "RGB", (40, 30)),
    (".png", "L", (17, 23)),
    (".png", "RGBA", (30, 40)),
    (".png", "P", (25, 25)),
    (".jpg", "RGB", (1, 1)),
    (".jpg", "L", (3000, 2000)),
    (".jpg", "RGB", (50, 80)),
    (".png", "RGB", (64, 48)),
]


def _make_kaggle(folder: Path) -> dict[str, set[str]]:
    """cat.* and dog.* files of odd sizes and modes, plus 2 bad cats and 1 bad dog. Returns name sets."""
    folder.mkdir(parents=True)
    names = {"good": set(), "bad": set()}
    for animal in ("cat", "dog"):
        for i, (suffix, mode, size) in enumerate(GOOD_KINDS):
            name = f"{animal}.{i}{suffix}"
            big = size == (3000, 2000)
            _save(Image.new(mode, size, 128) if big else _image(mode, size, seed=i), folder / name)
            names["good"].add(name)
    (folder / "cat.100.jpg").write_bytes(_truncated_jpeg())
    (folder / "cat.101.jpg").write_text("this is not an image\n")
    (folder / "dog.100.jpg").write_bytes(b"")
    names["bad"] |= {"cat.100.jpg", "cat.101.jpg", "dog.100.jpg"}
    return names


@pytest.fixture(scope="module")
def kaggle_root(tmp_path_factory) -> tuple[Path, dict[str, set[str]]]:
    root = tmp_path_factory.mktemp("kaggle")
    return root, _make_kaggle(root / "train")


def _load_quietly(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedFilesWarning)
        return kaggle_dogs_vs_cats(*args, **kwargs)


def test_kaggle_loads_converts_and_skips_bad_files(kaggle_root):
    root, names = kaggle_root
    with pytest.warns(SkippedFilesWarning, match=r"skipped 3 of 19"):
        ds = kaggle_dogs_vs_cats(root, "train", val_fraction=1e-6, transform=imagenet_transforms(train=False))
    assert {p.name for p, _ in ds.skipped} == names["bad"]
    assert {p.name for p, _ in ds.samples} == names["good"]
    assert ds.classes == ["cat", "dog"]
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 224, 224) and x.dtype == torch.float32
        assert y == (ds.samples[i][0].name.startswith("dog"))
    assert ds.targets == [y for _, y in ds.samples]


def test_kaggle_without_transform_returns_rgb_pil_images(kaggle_root):
    ds = _load_quietly(kaggle_root[0], "train", val_fraction=1e-6)
    modes = {ds[i][0].mode for i in range(len(ds))}
    assert modes == {"RGB"}


def test_kaggle_split_is_seeded_disjoint_per_class_and_covers_everything(kaggle_root):
    root, names = kaggle_root

    def names_of(split, seed=0, where=root):
        ds = _load_quietly(where, split, val_fraction=0.25, seed=seed)
        return {p.name for p, _ in ds.samples} | {p.name for p, _ in ds.skipped}

    train, val = names_of("train"), names_of("val")
    assert train.isdisjoint(val)
    assert train | val == names["good"] | names["bad"]
    # per class: round(10 cat files * 0.25) = 3, round(9 dog files * 0.25) = 2
    assert sum(n.startswith("cat") for n in val) == 3 and sum(n.startswith("dog") for n in val) == 2
    assert names_of("train") == train  # deterministic
    assert names_of("val", where=root / "train") == val  # root may point at the jpg folder itself
    assert any(names_of("val", seed=s) != val for s in range(1, 5))


def test_kaggle_bad_arguments():
    with pytest.raises(ValueError, match="'train', 'val' or 'test'"):
        kaggle_dogs_vs_cats("anywhere", "testing")
    with pytest.raises(ValueError, match="between 0 and 1"):
        kaggle_dogs_vs_cats("anywhere", val_fraction=1.0)


def test_kaggle_missing_folder_says_expected_layout(tmp_path):
    missing = tmp_path / "dogs-vs-cats"
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        kaggle_dogs_vs_cats(missing)
    assert str(missing) in str(info.value) and "train/cat.0.jpg" in str(info.value)


def test_kaggle_empty_folder_says_expected_naming(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(ValueError, match=r"cat\.<number>\.jpg.*no files"):
        kaggle_dogs_vs_cats(tmp_path)


def test_kaggle_misnamed_files_are_named_in_the_error(tmp_path):
    for name in ("kitten.jpg", "puppy.jpg"):
        _image("RGB").save(tmp_path / name)
    with pytest.raises(ValueError, match=r"kitten\.jpg.*cat\.0\.jpg"):
        kaggle_dogs_vs_cats(tmp_path)


def test_kaggle_unlabelled_test_set_and_class_folders_get_hints(tmp_path):
    (tmp_path / "test1").mkdir()
    _image("RGB").save(tmp_path / "test1" / "1.jpg")
    with pytest.raises(ValueError, match="unlabelled test1"):
        kaggle_dogs_vs_cats(tmp_path / "test1")
    (tmp_path / "cat").mkdir()
    with pytest.raises(ValueError, match=r"image_folder\(root\)"):
        kaggle_dogs_vs_cats(tmp_path)


def test_kaggle_warns_about_ignored_names(tmp_path):
    for name in ("cat.1.jpg", "dog.1.jpg", "cat.2.jpg", "dog.2.jpg", "kitten.jpg"):
        _image("RGB").save(tmp_path / name)
    with pytest.warns(UserWarning, match=r"ignored 1 files.*kitten\.jpg"):
        ds = kaggle_dogs_vs_cats(tmp_path, val_fraction=0.5)
    assert len(ds) == 2 and ds.skipped == []


# --------------------------------------------------------------------------- folder per class


def test_image_folder_sorted_classes_and_skips(tmp_path):
    for cls, n in (("dog", 3), ("cat", 2), ("bird", 1)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            _image("RGB").save(tmp_path / cls / f"{i}.jpg")
    (tmp_path / "cat" / "666.jpg").write_bytes(b"")  # like the empty file in Microsoft's PetImages
    (tmp_path / "cat" / "Thumbs.db").write_bytes(b"\0")  # not an image extension: not listed
    (tmp_path / "empty").mkdir()
    with pytest.warns(SkippedFilesWarning, match="skipped 1 of 7"):
        ds = image_folder(tmp_path, imagenet_transforms(train=True))
    assert ds.classes == ["bird", "cat", "dog"]
    assert ds.targets == [0, 1, 1, 2, 2, 2]
    assert [p.name for p, _ in ds.skipped] == ["666.jpg"]
    assert ds[0][0].shape == (3, 224, 224)


def test_image_folder_missing_and_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="root/cat/1.jpg"):
        image_folder(tmp_path / "nope")
    _image("RGB").save(tmp_path / "cat.0.jpg")  # loose files, no class folders
    with pytest.raises(ValueError, match="no class folders"):
        image_folder(tmp_path)


# --------------------------------------------------------------------------- torchvision datasets, offline


def _refuse_urlopen(monkeypatch) -> list[str]:
    """Replace urllib's urlopen with a stub that records the URL and raises URLError."""
    calls: list[str] = []

    def fake_urlopen(request, *args, **kwargs):
        calls.append(getattr(request, "full_url", request))
        raise urllib.error.URLError("no network (test)")

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return calls


def test_oxford_pets_missing_without_download(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="download=True") as info:
        oxford_pets_cats_vs_dogs(tmp_path)
    message = str(info.value)
    assert "robots.ox.ac.uk" in message and str(tmp_path / "oxford-iiit-pet") in message
    assert isinstance(info.value, RuntimeError)


def test_oxford_pets_failed_download(tmp_path, monkeypatch):
    calls = _refuse_urlopen(monkeypatch)
    with pytest.raises(DatasetUnavailableError, match="URLError.*copy an existing"):
        oxford_pets_cats_vs_dogs(tmp_path, "test", download=True)
    assert calls and "robots.ox.ac.uk" in calls[0]


def test_oxford_pets_labels_cat_0_dog_1(tmp_path):
    base = tmp_path / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations").mkdir()
    rows = ["Abyssinian_1 1 1 1", "american_bulldog_1 2 2 1", "Bengal_7 6 1 6"]  # id class species breed
    (base / "annotations" / "test.txt").write_text("\n".join(rows) + "\n")
    for row in rows:
        _image("L").save(base / "images" / f"{row.split()[0]}.jpg")
    ds = oxford_pets_cats_vs_dogs(tmp_path, "test", transform=imagenet_transforms(train=False))
    assert ds.classes == ["cat", "dog"]
    assert [ds[i][1] for i in range(3)] == [0, 1, 0]
    assert ds[1][0].shape == (3, 224, 224)
    with pytest.raises(ValueError, match="'trainval' or 'test'"):
        oxford_pets_cats_vs_dogs(tmp_path, "train")


def test_cifar10_missing_without_download(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="cifar-10-batches-py.*download=True"):
        cifar10(tmp_path, "train", classes=("cat", "dog"))


def test_cifar10_failed_download(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def fake_download_url(url, *args, **kwargs):
        raise OSError(f"cannot reach {url} (test)")

    monkeypatch.setattr(tv_utils, "download_url", fake_download_url)
    with pytest.raises(DatasetUnavailableError, match=r"cifar-10-python\.tar\.gz.*failed"):
        cifar10(tmp_path, "test", download=True)


@pytest.mark.parametrize("kwargs, match", [
    ({"split": "val"}, "'train' or 'test'"),
    ({"classes": ("cat", "wolf")}, "not a CIFAR-10 class"),
    ({"classes": (3, 3)}, "without repeats"),
])
def test_cifar10_bad_arguments_fail_before_looking_for_data(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cifar10(tmp_path, **kwargs)


# --------------------------------------------------------------------------- so many images per class; the full set
def test_split_per_class_deals_disjoint_parts_and_the_rest():
    labels = torch.tensor([0] * 10 + [1] * 6)
    ds = torch.utils.data.TensorDataset(torch.arange(16).float(), labels)
    train, val, rest = data.split_per_class(ds, [2, 3, None], seed=4)
    assert len(train) == 4 and len(val) == 6 and len(rest) == 6
    parts = [set(p.indices) for p in (train, val, rest)]
    assert set.union(*parts) == set(range(16)) and sum(map(len, parts)) == 16
    assert [int(labels[i]) for i in train.indices].count(0) == 2
    again = data.split_per_class(ds, [2, 3, None], seed=4)
    assert [p.indices for p in again] == [p.indices for p in (train, val, rest)]
    with pytest.raises(ValueError, match="class 1 has 6 images"):
        data.split_per_class(ds, [4, 3], seed=0)


def test_full_fashion_mnist_missing_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.fashion_mnist_full("train", folder=tmp_path)


def test_full_fashion_mnist_reads_idx_files(tmp_path):
    import gzip
    import struct

    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    labels = np.array([0, 6, 9], dtype=np.uint8)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">iiii", 2051, 3, 28, 28) + images.tobytes())
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">ii", 2049, 3) + labels.tobytes())
    ds = data.fashion_mnist_full("test", [6, 0], folder=tmp_path)
    x, y = ds.tensors
    assert y.tolist() == [1, 0] and x.shape == (2, 1, 28, 28)
    assert torch.allclose(x[0, 0] * data.FASHION_STD + data.FASHION_MEAN, torch.from_numpy(images[0]).float() / 255)


def test_kaggle_three_splits_are_disjoint_and_cover_everything(kaggle_root):
    root, names = kaggle_root

    def names_of(split):
        ds = _load_quietly(root, split, val_fraction=0.2, test_fraction=0.3)
        return {p.name for p, _ in ds.samples} | {p.name for p, _ in ds.skipped}

    train, val, test = names_of("train"), names_of("val"), names_of("test")
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == names["good"] | names["bad"]
    assert sum(n.startswith("cat") for n in test) == 3 and sum(n.startswith("dog") for n in test) == 3  # round(0.3 n)
    with pytest.raises(ValueError, match="empty"):
        _load_quietly(root, "test")                        # test_fraction=0: no test split


def test_kaggle_with_one_class_is_refused(tmp_path):
    for i in range(3):
        _image("RGB").save(tmp_path / f"cat.{i}.jpg")
    with pytest.raises(ValueError, match="no dog images"):
        kaggle_dogs_vs_cats(tmp_path)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), "white")
    img.paste((255, 0, 0), (0, 0, 10, 20))                  # a red stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6                                           # orientation 6: rotate 90° clockwise to display
    img.save(tmp_path / "cat.0.jpg", exif=exif.tobytes())
    _image("RGB").save(tmp_path / "dog.0.jpg")
    ds = kaggle_dogs_vs_cats(tmp_path, val_fraction=1e-6)
    shown = ds[[p.name for p, _ in ds.samples].index("cat.0.jpg")][0]
    assert shown.size == (20, 40)                              # turned upright: portrait
    top = np.asarray(shown)[:5].mean(axis=(0, 1))
    assert top[0] > 200 and top[1] < 80                        # the red stripe is now at the top


def test_a_looping_symlink_is_counted_as_skipped(tmp_path):
    for name in ("cat.0.jpg", "dog.0.jpg", "dog.1.jpg"):
        _image("RGB").save(tmp_path / name)
    (tmp_path / "cat.1.jpg").symlink_to(tmp_path / "cat.1.jpg")   # a link to itself
    with pytest.warns(SkippedFilesWarning, match="skipped 1 of 4"):
        ds = kaggle_dogs_vs_cats(tmp_path, val_fraction=1e-6)
    assert [p.name for p, _ in ds.skipped] == ["cat.1.jpg"] and "symbolic link" in ds.skipped[0][1]
