"""Tests for pruning_lib.checkpoints: the one atomic writer, the one format, and clear messages for bad files."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch

from pruning_lib.checkpoints import CheckpointError, atomic_write, load_checkpoint, save_checkpoint, save_pruned
from pruning_lib.models import small_vgg
from pruning_lib.surgery import load_pruned, prune_filters


def tiny():
    torch.manual_seed(0)
    return small_vgg((4, "M", 6), num_classes=2)


def test_files_are_readable_by_others_and_no_temporary_file_stays(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", tiny())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_a_stale_temporary_file_of_a_killed_write_is_removed(tmp_path):
    stale = tmp_path / ".m.pt.abc123.tmp"
    stale.write_bytes(b"half")
    save_checkpoint(tmp_path / "m.pt", tiny())
    assert not stale.exists()


def test_the_writer_syncs_before_renaming(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b)))
    atomic_write(tmp_path / "x.bin", lambda f: f.write(b"data"))
    assert calls == ["fsync", "replace"] and (tmp_path / "x.bin").read_bytes() == b"data"


def test_a_folder_is_not_a_checkpoint_path(tmp_path):
    with pytest.raises(IsADirectoryError, match="folder"):
        save_checkpoint(tmp_path, tiny())
    with pytest.raises(CheckpointError, match="folder"):
        load_checkpoint(tmp_path, tiny())


@pytest.mark.parametrize("content, words", [(b"", "empty"), (b"\x00\x01garbage" * 10, "cannot be read"),
                                            (None, "cannot be read")])
def test_damaged_files_get_a_message_naming_the_file(tmp_path, content, words):
    path = tmp_path / "bad.pt"
    if content is None:                      # a real checkpoint cut in half
        save_checkpoint(path, tiny())
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    for load in (lambda: load_checkpoint(path, tiny()), lambda: load_pruned(path, tiny())):
        with pytest.raises(CheckpointError, match=words) as info:
            load()
        assert "bad.pt" in str(info.value) and "weights_only=False" not in str(info.value)


@pytest.mark.parametrize("meta", [{"x": np.float64(1.0)}, {"path": __import__("pathlib").Path("a")}, {"o": object()}])
def test_save_pruned_refuses_meta_its_loader_could_not_read(tmp_path, meta):
    with pytest.raises(TypeError, match="plain types"):
        save_pruned(tiny(), tmp_path / "p.pt", meta=meta)
    assert not (tmp_path / "p.pt").exists()


def test_pruned_and_dense_checkpoints_share_one_format(tmp_path):
    model = tiny()
    pruned = prune_filters(tiny(), {"features.0": [1], "features.4": [0, 2]})
    save_checkpoint(tmp_path / "dense.pt", model, meta={"a": 1})
    save_pruned(pruned, tmp_path / "pruned.pt", meta={"b": 2})
    dense_again, meta = load_pruned(tmp_path / "dense.pt", tiny())     # a dense checkpoint is a pruned one with no cut
    assert meta == {"a": 1} and all(torch.equal(a, b) for a, b in zip(dense_again.state_dict().values(),
                                                                      model.state_dict().values()))
    restored, meta = load_pruned(tmp_path / "pruned.pt", tiny())
    assert meta == {"b": 2} and torch.equal(restored.features[4].weight, pruned.features[4].weight)


def test_a_model_with_another_head_is_named_in_the_message(tmp_path):
    path = save_pruned(prune_filters(tiny(), {"features.0": [0]}), tmp_path / "p.pt")
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"does not match SmallVGG.*classifier\.0\.weight"):
        load_pruned(path, small_vgg((4, "M", 6), num_classes=3))
