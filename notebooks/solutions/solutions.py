"""Solutions to the checked exercises of notebooks 01-05, for teachers (and for CI: every checker must accept them).

    import sys; sys.path.insert(0, "solutions")          # from notebooks/
    from solutions import taylor_scores
    from pruning_lib import exercises
    exercises.check_taylor(taylor_scores)                # ✓ the Taylor criterion from hooks: passed

Each function is what the starter cell of its notebook asks for, written with plain PyTorch (and, for the loop,
the library's pieces, the only exercise where the checkers allow them), the way a student would.

This file ships with every clone of the repository, so students can read it: a teacher who grades the exercises
should tell them not to, or remove ``notebooks/solutions/`` from the students' copies (docs/exercises.md).
"""

from __future__ import annotations

import itertools
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from pruning_lib import plan, surgery
from pruning_lib.rank import criteria
from pruning_lib.recover import train
from pruning_lib.recover.evaluation import evaluate
from pruning_lib.graph.groups import group_widths


# --------------------------------------------------------------------------- 01


def conv_cost(conv: nn.Conv2d, height: int, width: int) -> tuple[int, int]:
    """Parameters and FLOPs (2 per multiply-add) of `conv` on one image of height x width."""
    k_h, k_w = conv.kernel_size
    out_h = (height + 2 * conv.padding[0] - conv.dilation[0] * (k_h - 1) - 1) // conv.stride[0] + 1
    out_w = (width + 2 * conv.padding[1] - conv.dilation[1] * (k_w - 1) - 1) // conv.stride[1] + 1
    per_filter = conv.in_channels // conv.groups * k_h * k_w
    params = conv.out_channels * per_filter + (conv.out_channels if conv.bias is not None else 0)
    return params, 2 * per_filter * conv.out_channels * out_h * out_w


def standard_error(correct: torch.Tensor) -> float:
    """The standard error of the accuracy measured on these images, in percentage points."""
    p, n = float(correct.float().mean()), len(correct)
    return 100 * (p * (1 - p) / n) ** 0.5


# --------------------------------------------------------------------------- 02


def l1_norms(conv: nn.Conv2d) -> torch.Tensor:
    """The L1 norm of each filter's weights."""
    return conv.weight.detach().abs().sum(dim=(1, 2, 3))


def taylor_scores(model: nn.Module, batches) -> dict[str, torch.Tensor]:
    """Raw Taylor scores |mean_m ∂ℓ/∂z·z| per example (ℓ its own loss), averaged over examples, for every conv
    followed by a ReLU."""
    modules = list(model.named_modules())
    relu_after = {}
    for i, (name, m) in enumerate(modules):
        if isinstance(m, nn.Conv2d):
            relu_after[name] = next(r for r in modules[i + 1:] if isinstance(r[1], nn.ReLU))[1]
    totals, examples, maps = {c: 0.0 for c in relu_after}, 0, {}

    def keep(conv_name):
        def hook(module, inputs, output):
            output.register_hook(lambda grad: maps.__setitem__(conv_name, (output.detach() * grad).mean((2, 3))))
        return hook

    hooks = [relu.register_forward_hook(keep(c)) for c, relu in relu_after.items()]
    try:
        for x, y in batches:
            model.zero_grad()
            x = x.clone().requires_grad_(True)     # so that the first in-place ReLU's output has a gradient
            F.cross_entropy(model(x), y, reduction="sum").backward()     # each example's own loss
            for c in relu_after:
                totals[c] = totals[c] + maps[c].abs().sum(0)
            examples += len(y)
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
    return {c: t / examples for c, t in totals.items()}


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's ρ: Pearson's correlation of the ranks (ties share their average rank)."""
    def ranks(v: torch.Tensor) -> torch.Tensor:
        order = v.double().argsort()
        r = torch.empty_like(order, dtype=torch.float64)
        r[order] = torch.arange(len(v), dtype=torch.float64)
        for value in v.unique():                     # ties: the average of their ranks
            tied = v == value
            r[tied] = r[tied].mean()
        return r
    ra, rb = ranks(a), ranks(b)
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


# --------------------------------------------------------------------------- 03


def _next_module(model: nn.Module, name: str, kind) -> tuple[str, nn.Module]:
    modules = list(model.named_modules())
    i = [n for n, _ in modules].index(name)
    return next((n, m) for n, m in modules[i + 1:] if isinstance(m, kind))


def _keep_rows(module: nn.Module, names, keep: torch.Tensor) -> None:
    for attr in names:
        t = getattr(module, attr)
        if isinstance(t, nn.Parameter):
            setattr(module, attr, nn.Parameter(t.detach()[keep].clone()))
        elif t is not None:
            setattr(module, attr, t[keep].clone())


def remove_filter(model: nn.Module, conv_name: str, k: int) -> nn.Module:
    """Filter k out of the conv, its BatchNorm and the next conv's input channels."""
    conv = model.get_submodule(conv_name)
    keep = torch.tensor([i for i in range(conv.out_channels) if i != k])
    _keep_rows(conv, ("weight", "bias"), keep)
    conv.out_channels -= 1
    _, bn = _next_module(model, conv_name, nn.BatchNorm2d)
    _keep_rows(bn, ("weight", "bias", "running_mean", "running_var"), keep)
    bn.num_features -= 1
    _, nxt = _next_module(model, _name_of(model, bn), nn.Conv2d)
    nxt.weight = nn.Parameter(nxt.weight.detach()[:, keep].clone())
    nxt.in_channels -= 1
    return model


def _name_of(model: nn.Module, module: nn.Module) -> str:
    return next(n for n, m in model.named_modules() if m is module)


def remove_last_filter(model: nn.Module, k: int) -> nn.Module:
    """Filter k out of the last conv and its BatchNorm, and the Linear's columns of channel k (channel-major)."""
    conv_name = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)][-1]
    conv = model.get_submodule(conv_name)
    keep = torch.tensor([i for i in range(conv.out_channels) if i != k])
    _keep_rows(conv, ("weight", "bias"), keep)
    _, bn = _next_module(model, conv_name, nn.BatchNorm2d)
    _keep_rows(bn, ("weight", "bias", "running_mean", "running_var"), keep)
    _, linear = _next_module(model, conv_name, nn.Linear)
    span = linear.in_features // conv.out_channels             # H·W columns per channel
    columns = torch.cat([torch.arange(c * span, (c + 1) * span) for c in keep.tolist()])
    linear.weight = nn.Parameter(linear.weight.detach()[:, columns].clone())
    conv.out_channels, bn.num_features, linear.in_features = conv.out_channels - 1, bn.num_features - 1, len(columns)
    return model


def prune_train_repeat_by_hand(model: nn.Module, train_batches, val_batches, *, iterations: int,
                               filters_per_iteration: int, finetune_steps: int, lr: float):
    """Notebook 03's ten lines with the exercise's settings: rank (Taylor, first 2 training batches, normalised per
    layer), remove the globally lowest, measure, fine-tune, measure again; `iterations` times."""
    rank_batches = list(itertools.islice(train_batches, 2))
    history = []
    for _ in range(iterations):
        scores = criteria.rank_filters(model, rank_batches, "taylor")
        surgery.prune_filters(model, plan.plan_from_scores(scores, filters_per_iteration, min_keep=1))
        before = evaluate(model, val_batches)["accuracy"]
        train.fit(model, train_batches, steps=finetune_steps, lr=lr, progress=False)
        history.append({"widths": group_widths(model), "accuracy_before_finetune": before,
                        "accuracy_after_finetune": evaluate(model, val_batches)["accuracy"]})
    return model.eval(), history


# --------------------------------------------------------------------------- 04


def latency_ms(model: nn.Module, x: torch.Tensor, *, warmup: int = 3, repeats: int = 15) -> float:
    """The median time of one forward pass, in milliseconds (eval mode, no grad, after a warm-up)."""
    model.eval()
    with torch.no_grad():
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One conv computing bn(conv(x)) in eval mode: w' = w·γ/σ, b' = (b − mean)·γ/σ + β, σ = sqrt(var + eps)."""
    scale = bn.weight.detach() / (bn.running_var + bn.eps).sqrt()
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                       padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
    with torch.no_grad():
        folded.weight.copy_(conv.weight.detach() * scale[:, None, None, None])
        folded.bias.copy_((bias - bn.running_mean) * scale + bn.bias.detach())
    return folded


# --------------------------------------------------------------------------- 05


def groups_of(model: nn.Module) -> list[set[str]]:
    """The convs of a small ResNet whose filters go together: each stage's stream writers; each block's conv1."""
    found, stream = [], {"features.0.0"}
    for s, stage in enumerate(model.features[3:], start=3):
        for b, block in enumerate(stage):
            found.append({f"features.{s}.{b}.conv1.0"})
            if isinstance(block.shortcut, nn.Sequential):          # a new stream starts at this block
                found.append(stream)
                stream = {f"features.{s}.{b}.shortcut.0"}
            stream.add(f"features.{s}.{b}.conv2.0")
    return found + [stream]


def readers_of(model: nn.Module) -> dict[frozenset, set[str]]:
    """For each residual stream of a small ResNet, the layers that read it."""
    out, stream, readers = {}, {"features.0.0"}, set()
    for s, stage in enumerate(model.features[3:], start=3):
        for b, block in enumerate(stage):
            if isinstance(block.shortcut, nn.Sequential):
                readers.add(f"features.{s}.{b}.shortcut.0")
                out[frozenset(stream)] = readers | {f"features.{s}.{b}.conv1.0"}
                stream, readers = {f"features.{s}.{b}.shortcut.0"}, set()
            else:
                readers.add(f"features.{s}.{b}.conv1.0")
            stream.add(f"features.{s}.{b}.conv2.0")
    out[frozenset(stream)] = readers | {"classifier.0"}
    return out
