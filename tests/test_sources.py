"""Every data source gives train, val and test through the calls the notebooks make (datasets, loaders, class names)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pruning_lib.course import experiment
from pruning_lib.course.profiles import FULL, QUICK, apply_overrides

SMALL = apply_overrides(FULL, "input_size=32,batch_size=4,eval_batch=4")


def photo(path, rng, size=None, mode="RGB"):
    h, w = size or (int(rng.integers(30, 90)), int(rng.integers(30, 90)))
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode).save(path)


def check_source(profile, names):
    ds = experiment.target_datasets(profile)
    assert set(ds) == {"train", "val", "test"} and all(len(d) for d in ds.values())
    assert experiment.class_names(profile) == names
    loaders = experiment.target_loaders(profile)
    for split, loader in loaders.items():
        x, y = next(iter(loader))
        assert x.shape[1:] == profile.input_shape and set(y.tolist()) <= {0, 1}, split
    return ds


def test_the_embedded_source():
    ds = check_source(QUICK, ["T-shirt/top", "Shirt"])
    assert len(ds["test"]) == 5200


def test_a_kaggle_folder(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for animal in ("cat", "dog"):
        for i in range(14):
            photo(tmp_path / f"{animal}.{i}.jpg", rng, mode="L" if i == 0 else "RGB")
    monkeypatch.setenv("PRUNING_KAGGLE_DIR", str(tmp_path))
    monkeypatch.delenv("PRUNING_IMAGE_FOLDER", raising=False)
    ds = check_source(SMALL, ["cat", "dog"])
    assert [len(ds[s]) for s in ("train", "val", "test")] == [20, 4, 4]      # round(14 * 0.15) = 2 per class


def test_a_folder_per_class(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    for animal in ("cat", "dog"):
        (tmp_path / animal).mkdir()
        for i in range(10):
            photo(tmp_path / animal / f"{i}.jpg", rng, size=(30, 40))          # small photos are upscaled
    monkeypatch.setenv("PRUNING_IMAGE_FOLDER", str(tmp_path))
    ds = check_source(SMALL, ["cat", "dog"])
    files = [{p for p, _ in ds[s].samples} for s in ("train", "val", "test")]
    assert not (files[0] & files[1]) and not (files[0] & files[2]) and sum(map(len, files)) == 20


def test_a_folder_with_three_classes_is_refused(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    for animal in ("cat", "dog", "fox"):
        (tmp_path / animal).mkdir()
        for i in range(8):
            photo(tmp_path / animal / f"{i}.jpg", rng)
    monkeypatch.setenv("PRUNING_IMAGE_FOLDER", str(tmp_path))
    with pytest.raises(ValueError, match="two-class head"):
        experiment.target_datasets(SMALL)


def test_oxford_pets_from_its_own_layout(tmp_path, monkeypatch):
    """A tiny Oxford-IIIT Pet folder in torchvision's layout: images/ and annotations/{trainval,test}.txt."""
    rng = np.random.default_rng(3)
    root = tmp_path / "full" / "oxford-iiit-pet"
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    lines = {"trainval": [], "test": []}
    for i in range(24):
        name, species = f"Pet_{i}", 1 + i % 2                                       # 1 = cat, 2 = dog
        photo(root / "images" / f"{name}.jpg", rng)
        lines["trainval" if i < 16 else "test"].append(f"{name} {1 + i % 2} {species} 1")
    for split, rows in lines.items():
        (root / "annotations" / f"{split}.txt").write_text("\n".join(rows) + "\n")
    monkeypatch.setenv("PRUNING_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("PRUNING_KAGGLE_DIR", raising=False)
    monkeypatch.delenv("PRUNING_IMAGE_FOLDER", raising=False)
    ds = check_source(SMALL, ["cat", "dog"])
    assert len(ds["test"]) == 8 and len(ds["train"]) + len(ds["val"]) == 16
    x, y = ds["test"][0]
    assert isinstance(x, torch.Tensor) and y in (0, 1)
