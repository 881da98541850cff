"""Tests for the course layer's pieces: the comparisons' arms, the kept model, the baseline's settings, the
quick profile's data split, the source network's augmentation and the notebooks' cleaning for commit."""

from __future__ import annotations

import dataclasses

from pathlib import Path

import nbformat
import pytest
import torch

from conftest import SHAPE, loaders, tiny_model
from pruning_lib.recover import train
from pruning_lib.graph.groups import group_widths
from pruning_lib.course import arms, datasets, demo, experiment, source
from pruning_lib.course.profiles import QUICK
from pruning_lib.recover.iterative import PruningSchedule, prune_train_repeat


@pytest.fixture(scope="module")
def baseline():
    model = tiny_model()
    train.fit(model, loaders()[0], steps=30, lr=1e-2, progress=False)
    return model.eval()


def schedule(**kw):
    return PruningSchedule(**{**dict(criterion="taylor", filters_per_iteration=3, finetune_steps=3, rank_batches=2,
                                     target_fraction=0.5, seed=0), **kw})


def test_one_shot_gets_the_loops_total_budget_and_fraction_at_once(baseline):
    train_dl, val_dl = loaders()
    _, history = prune_train_repeat(baseline, train_dl, val_dl, schedule(), input_shape=SHAPE, progress=False)
    once, once_history = arms.one_shot_same_budget(baseline, history, schedule(), train_dl, val_dl, input_shape=SHAPE)
    assert len(once_history) == 2, "one iteration: everything at once"
    assert once_history["filters_removed"].iloc[-1] == history["filters_removed"].iloc[-1]
    assert once_history["finetune_steps"].sum() == history["finetune_steps"].sum()
    assert sum(group_widths(once).values()) == sum(group_widths(baseline).values()) - history["filters_removed"].iloc[-1]


def test_budget_curve_pairs_each_loop_with_one_shot_at_its_total_budget(baseline):
    train_dl, val_dl = loaders()
    val, test = list(val_dl), list(val_dl)
    curve = arms.budget_curve(baseline, schedule(), [1, 3], train_dl, val, test, input_shape=SHAPE)
    assert curve["steps per iteration"].tolist() == [1, 3]
    _, history = prune_train_repeat(baseline, train_dl, val, schedule(finetune_steps=3), input_shape=SHAPE,
                                    progress=False)
    assert curve["total steps"].iloc[1] == history["finetune_steps"].sum()
    # the same test images on both sides: the gap is the difference of the two accuracies, with a paired noise
    assert curve["gap (points)"].tolist() == pytest.approx((curve["loop %"] - curve["one shot %"]).tolist())
    assert (curve["noise (±points)"] >= 0).all() and (curve["one shot: loss after its prune"] > 0).all()


def test_loss_after_prune_is_read_before_the_fine_tune(baseline):
    from pruning_lib.recover.evaluation import evaluate

    train_dl, val_dl = loaders()
    val = list(val_dl)
    after = arms.LossAfterPrune(val)
    seen = []

    class Before:                                   # the model right after each prune, as the loop hands it over
        def on_prune(self, row, model):
            seen.append(evaluate(model, val)["loss"])

    prune_train_repeat(baseline, train_dl, val, schedule(), input_shape=SHAPE, callbacks=[after, Before()],
                       progress=False)
    assert after.losses == pytest.approx(seen) and len(after.losses) >= 2


def test_from_scratch_keeps_the_architecture_and_trains_fresh_weights(baseline):
    train_dl, val_dl = loaders()
    pruned, _ = prune_train_repeat(baseline, train_dl, val_dl, schedule(), input_shape=SHAPE, progress=False)
    small = arms.from_scratch(pruned, tiny_model(), train_dl, steps=5, lr=1e-3, seed=1)
    assert group_widths(small) == group_widths(pruned) and not small.training
    assert not torch.equal(small.features[0].weight, pruned.features[0].weight)


def test_from_scratch_stops_and_chooses_as_the_final_fine_tune_does(baseline):
    """With a validation set, from scratch stops on the same plateau rule as `experiment.final_fine_tune` (no better
    validation accuracy for `patience` evaluations) and keeps the weights of its best evaluation: the same network
    as training by hand with `train.Plateau` and loading its best state."""
    from pruning_lib.models import scratch_model
    from pruning_lib.recover.evaluation import evaluate
    from pruning_lib.runtime import seed_everything

    train_dl, val_dl = loaders()
    val = list(val_dl)
    pruned, _ = prune_train_repeat(baseline, train_dl, val_dl, schedule(), input_shape=SHAPE, progress=False)
    small = arms.from_scratch(pruned, tiny_model(), loaders()[0], steps=400, lr=1e-2, seed=1, val_loader=val,
                              patience=2, eval_every=10)                  # a fresh loader: its own batch order
    history = small.history
    assert history["step"].max() < 400 and history.attrs["stopped_early"]      # the plateau stopped it
    best = history["val_accuracy"].max()
    assert evaluate(small, val)["accuracy"] == pytest.approx(best)             # the best evaluation's weights
    # by hand: the same seeds, the same fit with Plateau, then its best state
    by_hand = scratch_model(pruned, tiny_model(), seed=1)
    seed_everything(1)
    plateau = train.Plateau(2)
    train.fit(by_hand, loaders()[0], steps=400, lr=1e-2, val_loader=val, eval_every=10, callbacks=[plateau],
              progress=False)
    by_hand.load_state_dict(plateau.best_state)
    x = val[0][0]
    with torch.no_grad():
        torch.testing.assert_close(small(x), by_hand.eval()(x))
    # without a validation set: exactly `steps` steps and the last weights, as before
    fixed = arms.from_scratch(pruned, tiny_model(), train_dl, steps=7, lr=1e-3, seed=1)
    assert fixed.history["step"].max() == 7
    with pytest.raises(ValueError, match="patience"):
        arms.from_scratch(pruned, tiny_model(), train_dl, steps=7, lr=1e-3, val_loader=val)


def test_first_within_keeps_the_first_model_inside_the_budget(baseline):
    train_dl, val_dl = loaders()
    keep = arms.FirstWithin(1.0, 10**9, min_flops_ratio=1.0, min_params_ratio=1.0)      # every iteration qualifies
    _, history = prune_train_repeat(baseline, train_dl, val_dl, schedule(), input_shape=SHAPE, callbacks=[keep],
                                    progress=False)
    assert keep.row["iteration"] == 1 and group_widths(keep.model) == {
        c.removeprefix("filters:"): int(history.loc[1, c]) for c in history.columns if c.startswith("filters:")}
    never = arms.FirstWithin(1e-12, 1, min_flops_ratio=1.0, min_params_ratio=1.0)
    prune_train_repeat(baseline, train_dl, val_dl, schedule(), input_shape=SHAPE, callbacks=[never], progress=False)
    assert never.model is None and never.row is None


def test_quick_data_draws_train_and_val_per_class_and_tests_on_the_rest():
    ds = datasets.target_datasets(QUICK)
    assert (len(ds["train"]), len(ds["val"])) == (QUICK.train_images, QUICK.val_images)
    assert len(ds["test"]) == 2000 + 4000 - QUICK.train_images - QUICK.val_images
    used = set(ds["train"].indices) | set(ds["val"].indices)
    rest = set(ds["test"].datasets[1].indices)
    assert not used & rest and len(used | rest) == 4000
    other = datasets.target_datasets(dataclasses.replace(QUICK, seed=1))
    assert set(other["train"].indices) != set(ds["train"].indices)


def test_a_baseline_made_with_other_settings_is_not_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNING_CHECKPOINT_DIR", str(tmp_path))
    calls = []
    real = experiment.fine_tune_baseline

    def quick_fit(profile, **kw):
        calls.append(profile.seed)
        return experiment.source_model(profile).eval(), __import__("pandas").DataFrame({"step": [0]})

    monkeypatch.setattr(experiment, "fine_tune_baseline", quick_fit)
    experiment.load_baseline(QUICK)
    experiment.load_baseline(QUICK)                            # reused
    experiment.load_baseline(dataclasses.replace(QUICK, seed=5))  # other settings: made again
    assert calls == [0, 5] and real is not quick_fit


def test_augmented_batches_are_seeded_flips_and_shifts():
    x = torch.randn(6, 1, 28, 28)
    loader = [(x, torch.zeros(6, dtype=torch.long))]
    a = [b for b, _ in source.Augmented(loader, seed=3)]
    b = [b for b, _ in source.Augmented(loader, seed=3)]
    assert torch.equal(a[0], b[0]) and a[0].shape == x.shape and not torch.equal(a[0], x)


def test_clean_for_commit_drops_the_injected_cell_and_run_metadata(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("profile = 'quick'", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("profile = 'quick'", metadata={"tags": ["injected-parameters"]}),
                nbformat.v4.new_code_cell("1 + 1", metadata={"papermill": {"duration": 1.0}})]
    nb.metadata["papermill"] = {"input_path": "/work/x.ipynb"}
    executed = tmp_path / "run.ipynb"
    nbformat.write(nb, str(executed))
    clean = nbformat.read(str(demo.clean_for_commit(executed, tmp_path / "clean.ipynb")), as_version=4)
    assert len(clean.cells) == 2 and "papermill" not in clean.metadata
    assert all("papermill" not in c.metadata for c in clean.cells)


def test_a_notebook_whose_cell_times_out_is_run_once_more(tmp_path, monkeypatch):
    import nbconvert
    import papermill

    calls = []

    def execute(src, out, **kwargs):
        calls.append(kwargs["execution_timeout"])
        if len(calls) == 1:
            raise TimeoutError("A cell timed out while it was being executed, after 600 seconds.")
        nbformat.write(nbformat.v4.new_notebook(), out)

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    monkeypatch.setattr(nbconvert.HTMLExporter, "from_filename", lambda self, path: ("<html></html>", {}))
    monkeypatch.setenv("PRUNING_BUILD_DIR", str(tmp_path))
    out, _ = demo.run_notebook(Path("notebooks/01_fine_tuning.ipynb"), "quick")
    assert calls == [demo.CELL_TIMEOUT_S["quick"]] * 2 and out.with_suffix(".html").exists()
    calls.clear()
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: (_ for _ in ()).throw(ValueError("a real error")))
    with pytest.raises(ValueError, match="a real error"):
        demo.run_notebook(Path("notebooks/01_fine_tuning.ipynb"), "quick")


def test_first_within_saves_its_model_and_a_resumed_run_reads_it_back(baseline, tmp_path):
    train_dl, val_dl = loaders()
    key = {"run": "a"}
    keep = arms.FirstWithin(1.0, 10**9, min_flops_ratio=1.0, min_params_ratio=1.0, path=tmp_path / "first.pt",
                            template=tiny_model(), key=key)
    prune_train_repeat(baseline, train_dl, val_dl, schedule(), input_shape=SHAPE, callbacks=[keep], progress=False)
    again = arms.FirstWithin(1.0, 10**9, min_flops_ratio=1.0, min_params_ratio=1.0, path=tmp_path / "first.pt",
                             template=tiny_model(), key=key)
    assert again.row == keep.row and group_widths(again.model) == group_widths(keep.model)
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        assert torch.equal(again.model(x), keep.model(x))
    other = arms.FirstWithin(1.0, 10**9, path=tmp_path / "first.pt", template=tiny_model(), key={"run": "b"})
    assert other.model is None, "a file made for another run is ignored"


def test_checkpointed_run_saves_each_iteration_and_reads_a_finished_run_back(tmp_path, monkeypatch):
    import pandas as pd

    monkeypatch.setenv("PRUNING_CHECKPOINT_DIR", str(tmp_path))
    P = dataclasses.replace(QUICK, finetune_steps=1, rank_batches=1, target_fraction=0.3, fraction_per_iteration=0.15)
    torch.manual_seed(0)
    baseline = experiment.architecture(P).eval()
    x, y = torch.randn(16, *P.input_shape), torch.randint(0, 2, (16,))
    batches = [(x[:8], y[:8]), (x[8:], y[8:])]
    final, history, keep = arms.checkpointed_run(baseline, P, "l1", batches, batches[:1], min_flops_ratio=1.0,
                                                 min_params_ratio=1.0, distill=0.0)
    assert (tmp_path / "quick_l1_distill0.0_iterative.pt").exists() and keep.row["iteration"] == 1
    again, again_history, again_keep = arms.checkpointed_run(baseline, P, "l1", batches, batches[:1], min_flops_ratio=1.0,
                                                             min_params_ratio=1.0, distill=0.0)
    pd.testing.assert_frame_equal(again_history, history)
    assert group_widths(again) == group_widths(final) and group_widths(again_keep.model) == group_widths(keep.model)
