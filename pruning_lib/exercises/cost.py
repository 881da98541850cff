"""Checkers for notebooks 01 and 04: what a layer costs, the test set's noise, timing, folding BatchNorm."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
from torch import nn

from ..measure.counting import count_flops, count_parameters
from ..measure.deploy import fold_batchnorm
from ._verdict import Wrong, close, verdict

__all__ = ["check_conv_cost", "check_fold_batchnorm", "check_latency", "check_standard_error"]

#: (in_channels, out_channels, kernel, stride, padding, bias, height, width): the convs the checker tries.
CONVS = [(3, 8, 3, 1, 1, True, 16, 16), (1, 4, 5, 1, 0, False, 28, 28), (8, 16, 3, 2, 1, True, 15, 11),
         (16, 32, 1, 1, 0, False, 7, 7)]


def check_conv_cost(conv_cost: Callable) -> bool:
    """01: ``conv_cost(conv, height, width) -> (parameters, FLOPs)`` for one image of that size (2 FLOPs per
    multiply-add), checked against `measure.count_parameters` and `measure.count_flops`."""
    def check() -> None:
        torch.manual_seed(0)
        for cin, cout, k, s, p, bias, h, w in CONVS:
            conv = nn.Conv2d(cin, cout, k, stride=s, padding=p, bias=bias)
            params, flops = count_parameters(conv), count_flops(conv, (1, cin, h, w))
            got = conv_cost(conv, h, w)
            if not isinstance(got, tuple) or len(got) != 2:
                raise Wrong(f"return a pair (parameters, FLOPs), not {type(got).__name__}")
            got_params, got_flops = (int(v) for v in got)
            where = f"Conv2d({cin}, {cout}, kernel {k}, stride {s}, padding {p}, bias={bias}) on {h}x{w}"
            if got_params != params:
                hint = " (the bias: one per filter)" if bias and got_params == params - cout else ""
                raise Wrong(f"{where}: {got_params:,} parameters, expected {params:,}{hint}")
            if got_flops != flops:
                on_input = 2 * cin * cout * k * k * h * w
                hint = (" (FLOPs count 2 per multiply-add)" if 2 * got_flops == flops else
                        " (count at the output's positions, not the input's: stride and padding change them)"
                        if got_flops == on_input != flops else "")
                raise Wrong(f"{where}: {got_flops:,} FLOPs, expected {flops:,}{hint}")
    return verdict("the parameters and FLOPs of a conv", check)


def check_standard_error(standard_error: Callable) -> bool:
    """01: ``standard_error(correct) -> points``: the standard error of an accuracy measured on ``len(correct)``
    images (``correct`` is 1.0 where right), in percentage points: 100·sqrt(p(1 − p)/n)."""
    def check() -> None:
        gen = torch.Generator().manual_seed(1)
        for n, p in ((400, 0.85), (5200, 0.5), (50, 0.98)):
            correct = (torch.rand(n, generator=gen) < p).float()
            acc = float(correct.mean())
            want = 100 * (acc * (1 - acc) / n) ** 0.5
            got = float(standard_error(correct))
            if not close(got, want, rtol=1e-3):
                hint = (" (in points: multiply by 100)" if close(100 * got, want, rtol=1e-3) else
                        " (divide the variance by n, then take the square root)" if close(got, want * n ** 0.5, rtol=1e-3)
                        else "")
                raise Wrong(f"{n} images at {100 * acc:.1f}%: {got:.4f}, expected {want:.4f}{hint}")
    return verdict("the standard error of a test accuracy", check)


class _Sleepy(nn.Module):
    """A model that takes `ms` per call, 300 ms on its first call (a cold start) and 5x on every 4th (a hiccup)."""

    def __init__(self, ms: float) -> None:
        super().__init__()
        self.ms, self.calls = ms, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        time.sleep(0.3 if self.calls == 1 else self.ms * (5 if self.calls % 4 == 0 else 1) / 1e3)
        return x


def check_latency(latency_ms: Callable) -> bool:
    """04: ``latency_ms(model, x) -> milliseconds``: the typical time of one forward pass (eval mode, no grad,
    warm-up first, several repeats, their median), checked on a fast and a slow model that start cold and
    hiccup now and then."""
    def check() -> None:
        x = torch.zeros(1)
        fast, slow = _Sleepy(4.0), _Sleepy(12.0)
        got_fast, got_slow = float(latency_ms(fast, x)), float(latency_ms(slow, x))
        if fast.calls < 4:
            raise Wrong(f"the model ran {fast.calls} time(s): warm it up, then time several repeats")
        if got_fast < 1.0:
            raise Wrong(f"{got_fast:.4f} for a model that takes about 4 ms per call: return milliseconds")
        if got_fast > 40:
            raise Wrong(f"{got_fast:.1f} ms for a model that takes about 4 ms after its first, cold call: "
                        "run it a few times before timing (warm-up)")
        if got_fast > 6.5:
            raise Wrong(f"{got_fast:.1f} ms for a model that takes 4 ms on most calls and 20 ms on a few: take the "
                        "median of the repeats, not the mean")
        ratio = got_slow / got_fast
        if not 2.2 <= ratio <= 3.8:
            raise Wrong(f"the slow model (12 ms) measured {ratio:.2f}x the fast one (4 ms), expected about 3x")
    return verdict("measuring latency", check)


def check_fold_batchnorm(fold: Callable) -> bool:
    """04: ``fold(conv, bn) -> conv``: one Conv2d computing ``bn(conv(x))`` in eval mode (the deploy form's
    folding), checked against `measure.fold_batchnorm` on convs with and without a bias."""
    def check() -> None:
        torch.manual_seed(2)
        for bias in (False, True):
            conv, bn = nn.Conv2d(3, 6, 3, padding=1, bias=bias), nn.BatchNorm2d(6, eps=1e-3)
            with torch.no_grad():
                bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.2, 3)
                bn.weight.uniform_(0.5, 2), bn.bias.uniform_(-1, 1)
            pair = nn.Sequential(conv, bn).eval()
            want = fold_batchnorm(pair)
            folded = fold(copy.deepcopy(conv), copy.deepcopy(bn).eval())
            if not isinstance(folded, nn.Conv2d):
                raise Wrong(f"return one nn.Conv2d, not {type(folded).__name__}")
            if folded.bias is None:
                raise Wrong("the folded conv needs a bias: the BatchNorm's shift (β − γ·mean/σ) goes there")
            x = torch.randn(2, 3, 8, 8)
            with torch.no_grad():
                got, ref = folded.eval()(x), want(x)
            if not close(got, ref, rtol=1e-4, atol=1e-5):
                err = float((got - ref).abs().max())
                raise Wrong(f"conv bias={bias}: outputs differ from conv -> BatchNorm by up to {err:.3g} "
                            "(σ = sqrt(running_var + eps); the conv's own bias goes through the BatchNorm too)")
    return verdict("folding BatchNorm into the conv", check)
