"""Checkers for notebook 02: the L1 criterion, the Taylor criterion from hooks, Spearman's ρ."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..rank.criteria import rank_filters
from ..rank.oracle import spearman
from ._guard import without_library
from ._verdict import Wrong, close, verdict

__all__ = ["check_l1", "check_spearman", "check_taylor", "tiny_chain"]


def tiny_chain(seed: int = 0, *, inplace: bool = True) -> nn.Module:
    """conv-BN-ReLU x3 with a pool, global pooling and a Linear head: small enough to check in a second."""
    torch.manual_seed(seed)
    relu = lambda: nn.ReLU(inplace=inplace)  # noqa: E731
    model = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), relu(),
        nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), relu(), nn.MaxPool2d(2),
        nn.Conv2d(8, 5, 3, padding=1), nn.BatchNorm2d(5), relu(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3), m.running_var.uniform_(0.5, 1.5), m.bias.uniform_(-0.3, 0.3)
    return model.eval()


def _batches(seed: int, n: int = 2, size: int = 6) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 1, 8, 8, generator=gen), torch.randint(0, 3, (size,), generator=gen)) for _ in range(n)]


def _norm(conv: nn.Conv2d, p: int) -> torch.Tensor:
    return conv.weight.detach().flatten(1).norm(p=p, dim=1)


def check_l1(l1_norms: Callable) -> bool:
    """02: ``l1_norms(conv) -> (out_channels,)``: the L1 norm of each filter's weights, Σ|W_k|."""
    l1_norms = without_library(l1_norms)

    def check() -> None:
        torch.manual_seed(3)
        for conv in (nn.Conv2d(3, 8, 3), nn.Conv2d(16, 4, 1, bias=False), nn.Conv2d(4, 6, 5)):
            want, got = _norm(conv, 1), torch.as_tensor(l1_norms(conv)).detach().flatten()
            if got.shape != want.shape:
                raise Wrong(f"{conv}: {tuple(got.shape)} scores, expected one per filter: {tuple(want.shape)}")
            if not close(got, want):
                fan_in = conv.weight[0].numel()
                hint = (" (that is the mean of |w|; L1 is their sum)" if close(got * fan_in, want) else
                        " (that is the L2 norm)" if close(got, _norm(conv, 2)) else
                        " (sum |w| over each filter's input channels and kernel positions)")
                raise Wrong(f"{conv}: filter 0 scored {float(got[0]):.4f}, expected {float(want[0]):.4f}{hint}")
    return verdict("the L1 criterion", check, notebook="02", exercise="l1_norms")


def _taylor_variants(model: nn.Module, batches) -> dict[str, dict[str, torch.Tensor]]:
    """Typical wrong answers, to name them: |·| after averaging over examples; the conv's output (before the
    BatchNorm) instead of the map after the ReLU; the batch's mean loss instead of each example's own loss.
    (Before or after the ReLU gives the same ∂C/∂z·z.)"""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    modules = dict(model.named_modules())
    names = list(modules)
    relu_of = {c: next(n for n in names[names.index(c):] if isinstance(modules[n], nn.ReLU)) for c in convs}
    out = {"abs after averaging": {}, "the conv's outputs, before the BatchNorm": {}, "the batch's mean loss": {}}
    sums = {k: {c: 0 for c in convs} for k in ("signed", "pre", "mean")}
    count = 0
    for x, y in batches:
        pre, post = {}, {}
        hooks = [modules[relu_of[c]].register_forward_hook(lambda m, i, o, c=c: post.__setitem__(c, o)) for c in convs]
        hooks += [modules[c].register_forward_hook(lambda m, i, o, c=c: pre.__setitem__(c, o)) for c in convs]
        loss = F.cross_entropy(model(x), y, reduction="sum")          # each example's own loss
        for h in hooks:
            h.remove()
        grads = torch.autograd.grad(loss, [post[c] for c in convs] + [pre[c] for c in convs])
        for j, c in enumerate(convs):
            dpost, dpre = grads[j], grads[len(convs) + j]
            sums["signed"][c] = sums["signed"][c] + (dpost * post[c]).mean((2, 3)).sum(0)
            sums["pre"][c] = sums["pre"][c] + (dpre * pre[c]).mean((2, 3)).abs().sum(0)
            sums["mean"][c] = sums["mean"][c] + (dpost * post[c]).mean((2, 3)).abs().sum(0) / len(y)
        count += len(y)
    for c in convs:
        out["abs after averaging"][c] = (sums["signed"][c] / count).abs().detach()
        out["the conv's outputs, before the BatchNorm"][c] = (sums["pre"][c] / count).detach()
        out["the batch's mean loss"][c] = (sums["mean"][c] / count).detach()
    return out


def check_taylor(taylor_scores: Callable) -> bool:
    """02: ``taylor_scores(model, batches) -> {conv name: (C,)}``: the raw Taylor criterion of every conv,
    |mean over positions of ∂ℓ/∂z·z| per example, averaged over examples, with z the map after the conv's ReLU
    (found with forward and backward hooks; the ReLUs are in-place) and ℓ each example's own loss
    (``F.cross_entropy(..., reduction="sum")``); checked against
    ``rank.criteria.rank_filters(model, batches, "taylor", normalize=None)``."""
    taylor_scores = without_library(taylor_scores)

    def check() -> None:
        for seed in (0, 1):
            model, batches = tiny_chain(seed), _batches(seed)
            want = rank_filters(model, batches, "taylor", normalize=None)
            state = copy.deepcopy(model.state_dict())
            got = taylor_scores(model, batches)
            if not isinstance(got, dict) or set(got) != set(want):
                raise Wrong(f"return {{conv name: scores}} for the convs {sorted(want)}; got "
                            f"{sorted(got) if isinstance(got, dict) else type(got).__name__}")
            if any(not torch.equal(v, model.state_dict()[k]) for k, v in state.items()):
                raise Wrong("the model's weights or statistics changed: score it in eval mode, without training")
            variants = _taylor_variants(model, batches)
            for name in want:
                g = torch.as_tensor(got[name]).detach().flatten()
                if close(g, want[name], rtol=1e-3, atol=1e-9):
                    continue
                hint = next((f" (that is {v}: take |·| per example, then average)" if v == "abs after averaging" else
                             f" (that is with {v}: sum the losses, reduction='sum', so each example's gradient is "
                             "its own loss's)" if v == "the batch's mean loss" else
                             f" (those are {v}: hook the ReLU's output)"
                             for v, s in variants.items() if close(g, s[name], rtol=1e-3, atol=1e-9)),
                            " (in-place ReLUs overwrite the conv's output: hook the ReLU)")
                raise Wrong(f"model {seed}, {name}: scores {g[:3].tolist()}..., expected {want[name][:3].tolist()}...{hint}")
    return verdict("the Taylor criterion from hooks", check, notebook="02", exercise="taylor_scores")


def check_spearman(rank_correlation: Callable) -> bool:
    """02: ``rank_correlation(a, b) -> float``: Spearman's ρ of two 1-D tensors, ties given their average rank;
    checked against `oracle.spearman`."""
    rank_correlation = without_library(rank_correlation)

    def check() -> None:
        gen = torch.Generator().manual_seed(4)
        a = torch.rand(50, generator=gen)
        cases = {"random": (a, torch.rand(50, generator=gen)), "monotone, not linear": (a, a.exp() ** 3),
                 "with ties": (torch.randint(0, 5, (40,), generator=gen).float(),
                               torch.randint(0, 4, (40,), generator=gen).float())}
        for case, (x, y) in cases.items():
            want, got = spearman(x, y), float(rank_correlation(x, y))
            if not close(got, want, rtol=1e-6, atol=1e-9):
                pearson = float(torch.corrcoef(torch.stack([x, y]))[0, 1])
                hint = (" (that is Pearson's r of the values: correlate their ranks)" if close(got, pearson) else
                        " (tied values share the average of their ranks)" if case == "with ties" else "")
                raise Wrong(f"{case}: {got:.4f}, expected {want:.4f}{hint}")
    return verdict("Spearman's rank correlation", check, notebook="02", exercise="rank_correlation")
