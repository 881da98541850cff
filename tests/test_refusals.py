"""Bad inputs get a clear message and change nothing (issue: never silently wrong)."""

from __future__ import annotations


import pytest
import torch
import torch.nn as nn

from pruning_lib.recover import train
from pruning_lib.checkpoints import save_pruned
from pruning_lib.surgery import load_pruned
from pruning_lib.graph.groups import channel_groups
from pruning_lib.course import experiment, paths
from pruning_lib.rank.criteria import rank_filters
from pruning_lib.models import small_vgg
from pruning_lib.surgery import prune_filters


def tiny():
    torch.manual_seed(0)
    return small_vgg((4, "M", 6), num_classes=2).eval()


def batch(n=8):
    return torch.randn(n, 1, 8, 8), torch.randint(0, 2, (n,))


@pytest.mark.parametrize("batches, kw", [([], {}), ([batch()], {"max_batches": 0})])
def test_ranking_without_data_says_so(batches, kw):
    with pytest.raises(ValueError, match="no data to rank with"):
        rank_filters(tiny(), batches, "taylor", **kw)


def test_ranking_nan_inputs_names_the_layer():
    x, y = batch()
    with pytest.raises(ValueError, match="taylor scores of features.0 are not finite"):
        rank_filters(tiny(), [(torch.full_like(x, float("nan")), y)], "taylor")


def test_a_constant_loss_warns_that_the_ranking_is_arbitrary():
    with pytest.warns(RuntimeWarning, match="every Taylor score is 0"):
        rank_filters(tiny(), [batch()], "taylor", loss_fn=lambda out, target: out.sum() * 0)


def test_inference_mode_is_explained():
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match="inference_mode"):
            rank_filters(tiny(), [batch()], "taylor")
        with pytest.raises(RuntimeError, match="inference_mode"):
            prune_filters(tiny(), {"features.0": [0]})


def test_parameters_made_under_inference_mode_are_refused():
    with torch.inference_mode():
        model = tiny()
    with pytest.raises(NotImplementedError, match="inference tensor"):
        prune_filters(model, {"features.0": [0]})


def test_a_stale_optimizer_is_refused_before_training():
    model = tiny()
    optimizer = torch.optim.Adam(model.parameters())
    prune_filters(model, {"features.0": [0]})
    with pytest.raises(ValueError, match="built before the model was pruned"):
        train.fit(model, [batch()], steps=1, optimizer=optimizer, progress=False)
    partial = torch.optim.Adam(model.classifier.parameters())
    with pytest.raises(ValueError, match="does not hold"):
        train.fit(model, [batch()], steps=1, optimizer=partial, progress=False)


@pytest.mark.parametrize("wrap, words", [(nn.DataParallel, "prune model.module"),
                                         (torch.compile, "prune model._orig_mod")])
def test_wrapped_models_name_the_module_to_prune(wrap, words):
    with pytest.raises(TypeError, match=words):
        prune_filters(wrap(tiny()), {"features.0": [0]})


class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 2, 3)

    def forward(self, x):
        x = self.a(x)
        x.mul_(2.0)
        return self.b(x)


class Depthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.dw, self.b = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.b(self.dw(self.a(x)))


def test_messages_name_what_the_coupling_really_is():
    assert "changed in place by Tensor.mul_" in channel_groups(InPlace())["a"].refused
    groups = channel_groups(Depthwise())                 # the depthwise conv shrinks with the conv that feeds it
    assert not groups["a"].refused and [m.module for m in groups["a"].members] == ["a", "dw", "b"]


def test_loading_into_a_model_without_parameters_is_explained(tmp_path):
    path = save_pruned(tiny(), tmp_path / "p.pt")
    with pytest.raises(ValueError, match="has no parameters"):
        load_pruned(path, nn.Sequential())


def test_checkpoint_folder_variable_pointing_at_a_file_is_named(tmp_path, monkeypatch):
    afile = tmp_path / "not-a-folder"
    afile.write_text("x")
    monkeypatch.setenv("PRUNING_CHECKPOINT_DIR", str(afile))
    with pytest.raises(NotADirectoryError, match="PRUNING_CHECKPOINT_DIR"):
        paths.checkpoints_dir()


def test_tilde_in_folder_variables_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PRUNING_REPORTS_DIR", "~/reports")
    assert paths.reports_dir() == tmp_path / "reports" and (tmp_path / "reports").is_dir()


def test_a_wrong_profile_is_refused_before_any_folder_is_made(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNING_CHECKPOINT_DIR", str(tmp_path / "ck"))
    with pytest.raises(TypeError, match="must be a Profile"):
        experiment.baseline_path("quick")
    assert not (tmp_path / "ck").exists()
