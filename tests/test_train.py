"""Tests for pruning_lib.recover.train: evaluation, the training loop, callbacks, checkpoints."""

from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import pruning_lib.checkpoints as checkpoints
from pruning_lib.checkpoints import load_checkpoint, save_checkpoint
from pruning_lib.recover.distill import KnowledgeDistillation
from pruning_lib.recover.evaluation import confusion_matrix, evaluate, predict
from pruning_lib.models import small_vgg
from pruning_lib.runtime import pick_device, seed_everything
from pruning_lib.recover.train import (
    HISTORY_COLUMNS,
    Callback,
    FunctionCallback,
    StopTraining,
    fit,
)


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return small_vgg((4, "M", 8), in_channels=1, num_classes=3, hidden=8, dropout=0.1)


def blobs(n: int = 48, seed: int = 0) -> TensorDataset:
    """A small fixed, learnable problem: the class sets the mean brightness of an 8x8 image."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.3 + (y.float() - 1.0).view(-1, 1, 1, 1)
    return TensorDataset(x, y)


def loader(dataset=None, batch_size: int = 16, seed: int = 0, shuffle: bool = True) -> DataLoader:
    dataset = dataset if dataset is not None else blobs()
    g = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=g)


# --------------------------------------------------------------------------- devices and seeds


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device().type in {"cuda", "mps", "cpu"}
    if not torch.cuda.is_available():
        assert pick_device().type in {"mps", "cpu"}
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")


def test_seed_everything():
    g1 = seed_everything(7)
    a = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g1).item())
    g2 = seed_everything(7)
    b = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g2).item())
    assert a == b


# --------------------------------------------------------------------------- evaluation


class FixedLogits(nn.Module):
    """Returns the logits stored for each example (the input carries its index)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.logits[idx]


def test_evaluate_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(10, 4, generator=g)
    targets = torch.randint(0, 4, (10,), generator=g)
    model = FixedLogits(logits)
    dl = DataLoader(TensorDataset(torch.arange(10), targets), batch_size=3)  # uneven last batch
    result = evaluate(model, dl)

    probs = logits.softmax(dim=1)
    hand_loss = sum(-math.log(probs[i, targets[i]].item()) for i in range(10)) / 10
    hand_acc = sum(int(logits[i].argmax() == targets[i]) for i in range(10)) / 10
    assert result["n"] == 10
    assert result["loss"] == pytest.approx(hand_loss, rel=1e-5)
    assert result["accuracy"] == pytest.approx(hand_acc)


def test_evaluate_restores_modes_and_uses_eval_mode():
    model = tiny_model()
    seen = []
    model.register_forward_pre_hook(lambda m, inp: seen.append(m.training))
    model.train()
    model.features[1].eval()  # a mixed state: one BN frozen in eval
    evaluate(model, loader())
    assert seen and not any(seen)
    assert model.training and not model.features[1].training and model.classifier.training
    model.eval()
    evaluate(model, loader())
    assert not model.training


def test_evaluate_is_deterministic_despite_dropout():
    model = tiny_model().train()
    assert evaluate(model, loader()) == evaluate(model, loader())


def test_evaluate_empty_loader():
    empty = DataLoader(TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(ValueError, match="empty loader"):
        evaluate(tiny_model(), empty)


def test_predict_and_confusion_matrix():
    logits = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0], [2.0, 0, 0], [0, 2.0, 0]])
    targets = torch.tensor([0, 1, 1, 2, 1])
    dl = DataLoader(TensorDataset(torch.arange(5), targets), batch_size=2)
    preds, got_targets = predict(FixedLogits(logits), dl)
    assert preds.tolist() == [0, 1, 2, 0, 1]
    assert torch.equal(got_targets, targets)
    cm = confusion_matrix(preds, got_targets, 3)
    # rows = true class, columns = predicted class
    assert cm.tolist() == [[1, 0, 0], [0, 2, 1], [1, 0, 0]]
    assert cm.sum() == 5 and cm.diag().sum() / cm.sum() == pytest.approx(3 / 5)


def test_confusion_matrix_errors():
    with pytest.raises(ValueError, match="must match"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]), 2)
    with pytest.raises(ValueError, match="class 3 outside"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 2)


# --------------------------------------------------------------------------- fit


def test_fit_reduces_loss():
    model = tiny_model()
    dl = loader()
    before = evaluate(model, dl)["loss"]
    history = fit(model, dl, steps=60, lr=1e-2, progress=False)
    after = evaluate(model, dl)
    assert after["loss"] < 0.5 * before
    assert after["accuracy"] > 0.9
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]


# --------------------------------------------------------------------------- distillation


def test_distillation_loss_is_the_formula():
    teacher, student = tiny_model(1), tiny_model(2)
    x, y = blobs(16).tensors
    logits = student(x)
    alpha, T = 0.3, 2.5
    with torch.no_grad():
        p = torch.softmax(teacher.eval()(x) / T, dim=1)
    q_log = torch.log_softmax(logits / T, dim=1)
    kl = (p * (p.log() - q_log)).sum(dim=1).mean()          # KL(p || q), averaged over the batch
    expected = (1 - alpha) * F.cross_entropy(logits, y) + alpha * T**2 * kl
    got = KnowledgeDistillation(teacher, alpha, T)(logits, y, inputs=x)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.equal(KnowledgeDistillation(teacher, 0.0)(logits, y, inputs=x), F.cross_entropy(logits, y))
    # the student equal to the teacher: the soft term vanishes
    teacher.eval()
    same = KnowledgeDistillation(teacher, 1.0, T)(teacher(x), y, inputs=x)
    assert same.abs().item() < 1e-6


def test_distillation_leaves_the_teacher_alone():
    teacher, student = tiny_model(1).train(), tiny_model(2)
    teacher.features[0].eval()                                # a mixed state, to be restored exactly
    modes = {n: m.training for n, m in teacher.named_modules()}
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    loss_fn = KnowledgeDistillation(teacher, 0.5)
    fit(student, loader(), steps=5, lr=1e-2, loss_fn=loss_fn, val_loader=loader(shuffle=False), progress=False)
    assert {n: m.training for n, m in teacher.named_modules()} == modes
    assert all(torch.equal(state[k], v) for k, v in teacher.state_dict().items()), "BN stats or weights changed"
    assert all(p.grad is None for p in teacher.parameters())


def test_distillation_pulls_the_student_toward_the_teacher():
    """alpha = 1 ignores the labels: trained on *shuffled* labels, the student still learns the teacher's answers."""
    teacher = tiny_model(1)
    fit(teacher, loader(), steps=60, lr=1e-2, progress=False)
    x, y = blobs().tensors
    shuffled = TensorDataset(x, y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))])
    student = tiny_model(2)
    fit(student, loader(shuffled), steps=150, lr=1e-2, loss_fn=KnowledgeDistillation(teacher, 1.0, 1.0), progress=False)
    held_out = loader(blobs(48, 5), shuffle=False)
    agree = predict(student, held_out)[0] == predict(teacher, held_out)[0]
    assert agree.float().mean() > 0.9


def test_distillation_arguments_are_checked():
    with pytest.raises(ValueError, match="alpha"):
        KnowledgeDistillation(tiny_model(), alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        KnowledgeDistillation(tiny_model(), temperature=0)


def test_fit_history_rows_steps_mode():
    dl = loader()  # 3 batches per epoch
    history = fit(tiny_model(), dl, steps=7, val_loader=dl, progress=False)
    assert list(history.columns) == list(HISTORY_COLUMNS)
    assert history["step"].tolist() == [3, 6, 7]  # once per epoch, plus the end
    assert history["epoch"].tolist() == pytest.approx([1.0, 2.0, 7 / 3])
    assert history["val_accuracy"].between(0, 1).all()
    assert history["elapsed_s"].is_monotonic_increasing
    assert not history.attrs["stopped_early"]


def test_fit_history_epochs_mode_without_val():
    history = fit(tiny_model(), loader(), epochs=2, eval_every=2, progress=False)
    assert history["step"].tolist() == [2, 4, 6]
    assert history["val_loss"].isna().all() and history["train_loss"].notna().all()


def test_fit_train_loss_is_running_mean_since_last_row():
    losses = []
    history = fit(
        tiny_model(), loader(), steps=5, eval_every=2, progress=False,
        callbacks=[FunctionCallback(on_step=lambda step, loss, model: losses.append(loss))],
    )
    assert history["train_loss"].tolist() == pytest.approx(
        [np.mean(losses[0:2]), np.mean(losses[2:4]), losses[4]]
    )


def test_fit_start_step_continues_numbering():
    history = fit(tiny_model(), loader(), steps=3, start_step=6, progress=False)
    assert history["step"].tolist() == [9]
    assert history["epoch"].tolist() == [3.0]


def test_fit_with_iterable_loader_without_length():
    class Stream(IterableDataset):
        def __iter__(self):
            data = blobs(12)
            return iter([(data.tensors[0][i : i + 4], data.tensors[1][i : i + 4]) for i in range(0, 12, 4)])

    dl = DataLoader(Stream(), batch_size=None)
    history = fit(tiny_model(), dl, epochs=2, progress=False)
    assert history["step"].tolist() == [6]
    history = fit(tiny_model(), dl, steps=5, progress=False)
    assert history["step"].tolist() == [5]


def test_fit_restores_mode_and_trains_in_train_mode():
    model = tiny_model().eval()
    seen = []
    model.register_forward_pre_hook(lambda m, inp: seen.append(m.training))
    fit(model, loader(), steps=2, val_loader=loader(), eval_every=1, progress=False)
    assert True in seen and False in seen  # trains in train mode, evaluates in eval mode
    assert not any(m.training for m in model.modules())
    model.train()
    fit(model, loader(), steps=1, progress=False)
    assert all(m.training for m in model.modules())


def test_fit_default_optimizer_skips_frozen_parameters():
    model = tiny_model()
    for p in model.features.parameters():
        p.requires_grad_(False)
    frozen = [p.clone() for p in model.features.parameters()]
    head = model.classifier[-1].weight.clone()
    fit(model, loader(), steps=3, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(frozen, model.features.parameters()))
    assert not torch.equal(head, model.classifier[-1].weight)


def test_fit_uses_given_optimizer():
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    before = [p.clone() for p in model.parameters()]
    fit(model, loader(), steps=2, optimizer=opt, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_fit_progress_bar_runs(capsys):
    history = fit(tiny_model(), loader(), steps=2, progress=True)
    assert len(history) == 1
    assert "fit" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of steps or epochs"),
        ({"steps": 2, "epochs": 1}, "exactly one of steps or epochs"),
        ({"steps": 0}, "steps must be a positive int"),
        ({"epochs": 1, "eval_every": 0}, "eval_every must be a positive int"),
    ],
)
def test_fit_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit(tiny_model(), loader(), progress=False, **kwargs)


def test_fit_errors_name_the_problem():
    model = tiny_model()
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad"):
        fit(model, loader(), steps=1, progress=False)
    bad = DataLoader(TensorDataset(torch.zeros(4, 1, 8, 8)), batch_size=2)
    with pytest.raises(TypeError, match=r"\(inputs, targets\) pairs"):
        fit(tiny_model(), bad, steps=1, progress=False)
    nan_data = TensorDataset(torch.full((4, 1, 8, 8), float("nan")), torch.zeros(4, dtype=torch.long))
    model = tiny_model().eval()
    with pytest.raises(FloatingPointError, match="step 1"):
        fit(model, DataLoader(nan_data, batch_size=2), steps=2, progress=False)
    assert not model.training  # mode restored even on error


# --------------------------------------------------------------------------- callbacks


class Recorder(Callback):
    def __init__(self, stop_at_step: int | None = None) -> None:
        self.steps, self.records, self.stop_at_step = [], [], stop_at_step

    def on_step(self, step, loss, model):
        self.steps.append((step, loss))
        return step == self.stop_at_step

    def on_epoch(self, record, model):
        self.records.append(record)


def test_callbacks_are_called():
    rec = Recorder()
    evals = []
    dl = loader()
    history = fit(
        tiny_model(), dl, steps=6, val_loader=dl, progress=False,
        callbacks=[rec, lambda record, model: evals.append(record["step"])],
    )
    assert [s for s, _ in rec.steps] == [1, 2, 3, 4, 5, 6]
    assert all(isinstance(loss, float) for _, loss in rec.steps)
    assert pd.DataFrame(rec.records).equals(history)
    assert evals == [3, 6]


def test_callback_returning_true_stops_training():
    rec = Recorder(stop_at_step=4)
    model = tiny_model().eval()
    history = fit(model, loader(), steps=100, callbacks=[rec], progress=False)
    assert len(rec.steps) == 4
    assert history["step"].tolist() == [3, 4]  # the epoch row, then the partial interval
    assert history.attrs["stopped_early"]
    assert not model.training  # previous (eval) mode restored


def test_stop_training_exception_stops_cleanly():
    def stop_after_two(step, loss, model):
        if step == 2:
            raise StopTraining

    model = tiny_model().eval()
    stopper = FunctionCallback(on_step=stop_after_two)
    history = fit(model, loader(), epochs=5, callbacks=[stopper], progress=False)
    assert history["step"].tolist() == [2]
    assert history.attrs["stopped_early"]
    assert not model.training


def test_on_eval_can_stop_training():
    def early_stopping(record, model):
        return record["step"] >= 6

    history = fit(tiny_model(), loader(), epochs=10, callbacks=[early_stopping], progress=False)
    assert history["step"].tolist() == [3, 6]
    assert history.attrs["stopped_early"]


def test_bad_callback():
    with pytest.raises(TypeError, match="neither a Callback"):
        fit(tiny_model(), loader(), steps=1, callbacks=[42], progress=False)


# --------------------------------------------------------------------------- determinism


def test_fit_is_deterministic():
    def run() -> dict[str, torch.Tensor]:
        g = seed_everything(123)
        model = small_vgg((4, "M", 8), num_classes=3, hidden=8, dropout=0.5)
        dl = DataLoader(blobs(), batch_size=8, shuffle=True, generator=g)
        fit(model, dl, steps=12, progress=False)
        return model.state_dict()

    a, b = run(), run()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- checkpoints


def trained(steps: int = 3):
    model = tiny_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = fit(
        model, loader(), steps=steps, optimizer=opt, val_loader=loader(), eval_every=1, progress=False
    )
    return model, opt, history


def test_checkpoint_round_trip(tmp_path):
    model, opt, history = trained()
    path = tmp_path / "ckpt" / "model.pt"
    meta = {"stage": "fine-tune", "widths": [4, "M", 8], "acc": 0.5, "pruned": None}
    assert save_checkpoint(path, model, optimizer=opt, history=history, meta=meta) == path

    raw = torch.load(path, weights_only=True)  # plain types only
    assert raw["meta"] == meta

    fresh = tiny_model(seed=1)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-2)
    out = load_checkpoint(path, fresh, optimizer=fresh_opt)
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)
    pd.testing.assert_frame_equal(out["history"], history)
    assert out["meta"] == meta

    saved, loaded = opt.state_dict(), fresh_opt.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    for i, state in saved["state"].items():
        for key, value in state.items():
            assert torch.equal(loaded["state"][i][key], value)

    # Training continues identically from the restored state (same seed for dropout).
    torch.manual_seed(5)
    fit(model, loader(seed=5), steps=2, optimizer=opt, progress=False)
    torch.manual_seed(5)
    fit(fresh, loader(seed=5), steps=2, optimizer=fresh_opt, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), fresh.parameters()))


def test_checkpoint_model_only(tmp_path):
    model = tiny_model()
    save_checkpoint(tmp_path / "m.pt", model)
    out = load_checkpoint(tmp_path / "m.pt", tiny_model(seed=9))
    assert out == {"history": None, "meta": {}}
    with pytest.raises(ValueError, match="no optimizer state"):
        other = tiny_model()
        load_checkpoint(tmp_path / "m.pt", other, optimizer=torch.optim.Adam(other.parameters()))


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    model, opt, history = trained(steps=1)
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, meta={"version": 1})
    good = path.read_bytes()

    real_save = torch.save

    def interrupted(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, meta={"version": 2})
    monkeypatch.setattr(checkpoints.torch, "save", real_save)

    assert path.read_bytes() == good  # the old checkpoint is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temp file left behind
    assert load_checkpoint(path, tiny_model())["meta"] == {"version": 1}


def test_checkpoint_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pt") as info:
        load_checkpoint(tmp_path / "absent.pt", tiny_model())
    assert "save_checkpoint" in str(info.value)


def test_checkpoint_mismatch_names_keys_and_shapes(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, small_vgg((4, "M", 8), num_classes=3))
    with pytest.raises(ValueError) as info:
        load_checkpoint(path, small_vgg((4, "M", 6), num_classes=3))  # a "pruned" layer
    message = str(info.value)
    assert "features.4.weight: checkpoint (8, 4, 3, 3) vs model (6, 4, 3, 3)" in message
    assert "classifier.0.weight" in message and "same architecture" in message

    with pytest.raises(ValueError) as info:
        load_checkpoint(path, small_vgg((4, "M", 8), num_classes=3, batch_norm=False))
    message = str(info.value)
    assert "missing keys" in message and "features.0.bias" in message
    assert "unexpected keys" in message and "running_mean" in message


def test_checkpoint_rejects_non_plain_meta_and_foreign_files(tmp_path):
    with pytest.raises(TypeError, match=r"meta\['when'\] is a Timestamp"):
        save_checkpoint(tmp_path / "m.pt", tiny_model(), meta={"when": pd.Timestamp("2024-01-01")})
    assert not (tmp_path / "m.pt").exists()

    bare = tmp_path / "bare.pt"
    torch.save(tiny_model().state_dict(), bare)
    with pytest.raises(ValueError, match="not a pruning_lib checkpoint"):
        load_checkpoint(bare, tiny_model())


def test_checkpoint_optimizer_mismatch(tmp_path):
    model, opt, _ = trained(steps=1)
    save_checkpoint(tmp_path / "m.pt", model, optimizer=opt)
    other = tiny_model()
    head_only = torch.optim.Adam(other.classifier.parameters())
    with pytest.raises(ValueError, match="same parameters"):
        load_checkpoint(tmp_path / "m.pt", other, optimizer=head_only)


def test_mixed_precision_policy():
    from pruning_lib.runtime import autocast_dtype

    cpu = torch.device("cpu")
    assert autocast_dtype(cpu) is None and autocast_dtype(cpu, "bf16") is None   # float32 off CUDA
    with pytest.raises(ValueError, match="mixed precision"):
        autocast_dtype(cpu, "int8")
