"""Preflight names each missing piece and how to get it, and exits non-zero."""

from __future__ import annotations

import shutil
from collections import namedtuple

from PIL import Image

from pruning_lib.course import preflight
from pruning_lib.course.profiles import FULL, QUICK, apply_overrides

SMALL_FULL = apply_overrides(FULL, "input_size=32,batch_size=2")


def names(report):
    return {c.name for c in report.missing}


def test_the_quick_profile_has_everything_and_a_measured_estimate():
    report = preflight.run_checks(QUICK)
    assert not report.missing and report.seconds_per_step > 0 and report.estimate_s > 0
    assert any(line.startswith("estimate:") for line in report.lines())


def test_missing_fashion_subset_is_named(tmp_path, monkeypatch):
    from pruning_lib.data import locations

    monkeypatch.setenv("PRUNING_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(locations, "REPO_DATA_DIR", tmp_path / "none")
    report = preflight.run_checks(QUICK, time_steps=False)
    assert names(report) == {"data"} and "make_fashion_subset" in report.missing[0].fix


def test_full_profile_without_data_or_weights_says_what_to_get(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNING_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("PRUNING_KAGGLE_DIR", raising=False)
    monkeypatch.delenv("PRUNING_VGG16_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    report = preflight.run_checks(SMALL_FULL, time_steps=False)
    assert names(report) == {"data", "weights"}
    fixes = " ".join(c.fix for c in report.missing)
    assert "PRUNING_DOWNLOAD=1" in fixes and "vgg16-397923af.pth" in fixes
    assert "resnet18-f37072fd.pth" in fixes and "PRUNING_RESNET18_WEIGHTS" in fixes       # notebook 05's network
    assert preflight.main(["--profile", "full", "--no-timing"]) == 1


def test_a_bad_kaggle_folder_and_a_missing_weights_file_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNING_KAGGLE_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("PRUNING_VGG16_WEIGHTS", str(tmp_path / "vgg16.pth"))
    report = preflight.run_checks(SMALL_FULL, time_steps=False)
    assert names(report) == {"data", "weights"}
    assert "PRUNING_KAGGLE_DIR" in report.missing[0].detail and "does not exist" in report.missing[1].detail


def test_a_kaggle_folder_is_counted(tmp_path, monkeypatch):
    for i in range(8):
        for animal in ("cat", "dog"):
            Image.new("RGB", (40, 30), "gray").save(tmp_path / f"{animal}.{i}.jpg")
    (tmp_path / "dog.99.jpg").write_bytes(b"not a jpeg")
    monkeypatch.setenv("PRUNING_KAGGLE_DIR", str(tmp_path))
    check = preflight._data_check(SMALL_FULL)
    assert check.ok and "8 cat and 8 dog images readable, 1 unreadable skipped" in check.detail


def test_too_little_disk_is_named(monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10, 10, 1000))
    report = preflight.run_checks(QUICK, time_steps=False)
    assert names(report) == {"disk"} and "PRUNING_CHECKPOINT_DIR" in report.missing[0].fix
