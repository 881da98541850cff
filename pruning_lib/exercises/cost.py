"""Checkers for notebooks 01 and 04: what a layer costs, the test set's noise, timing, folding BatchNorm."""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from ..measure.counting import count_flops, count_parameters
from ..measure.deploy import fold_batchnorm
from ._guard import without_library
from ._verdict import Wrong, close, verdict

__all__ = ["check_conv_cost", "check_fold_batchnorm", "check_latency", "check_standard_error"]

#: (in_channels, out_channels, kernel, stride, padding, bias, height, width): the convs the checker tries.
CONVS = [(3, 8, 3, 1, 1, True, 16, 16), (1, 4, 5, 1, 0, False, 28, 28), (8, 16, 3, 2, 1, True, 15, 11),
         (16, 32, 1, 1, 0, False, 7, 7)]


def check_conv_cost(conv_cost: Callable) -> bool:
    """01: ``conv_cost(conv, height, width) -> (parameters, FLOPs)`` for one image of that size (2 FLOPs per
    multiply-add), checked against `measure.count_parameters` and `measure.count_flops`."""
    conv_cost = without_library(conv_cost)

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
    return verdict("the parameters and FLOPs of a conv", check, notebook="01", exercise="conv_cost")


def check_standard_error(standard_error: Callable) -> bool:
    """01: ``standard_error(correct) -> points``: the standard error of an accuracy measured on ``len(correct)``
    images (``correct`` is 1.0 where right), in percentage points: 100·sqrt(p(1 − p)/n)."""
    standard_error = without_library(standard_error)

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
    return verdict("the standard error of a test accuracy", check, notebook="01", exercise="standard_error")


class _Sleepy(nn.Module):
    """A model that sleeps `ms` per call: 300 ms on its first call (a cold start) and 10x on every 4th (a hiccup).

    It records how long each call really took (``durations``, ms, read around the sleep), so the checker judges a
    measurement against the calls it timed, not against a clock it hopes for: a busy machine slows both alike.
    """

    HICCUP = 10

    def __init__(self, ms: float) -> None:
        super().__init__()
        self.ms = ms
        self.durations: list[float] = []      # ms, one per call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        calls = len(self.durations) + 1
        start = time.perf_counter()
        time.sleep(0.3 if calls == 1 else self.ms * (self.HICCUP if calls % 4 == 0 else 1) / 1e3)
        self.durations.append(1e3 * (time.perf_counter() - start))
        return x

    def steady_ms(self) -> list[float]:
        """The durations of the calls after the cold one that were not hiccups (ms)."""
        return [d for i, d in enumerate(self.durations[1:], 2) if i % 4]


def _latency_range(model: _Sleepy) -> tuple[float, float]:
    """The (low, high) ms between which a median of timed warm calls of `model` lies, from its recorded durations.

    Each call sleeps at least ``model.ms`` and a timer around it reads at least that: low is ``model.ms`` less 10%
    for a coarse clock.  High is twice the median of the steady calls: a right answer exceeds it only if timing adds
    as much as a whole call; the mean of four or more calls is above it (every 4th takes 10x), the cold call far above.
    """
    return 0.9 * model.ms, 2 * statistics.median(model.steady_ms())


def _fits(got: float, model: _Sleepy) -> bool:
    """Whether `got` (ms) is in `_latency_range` of a model that ran at least 4 times."""
    if len(model.durations) < 4:
        return False
    low, high = _latency_range(model)
    return low <= got <= high


def _judge_latency(got: float, model: _Sleepy) -> None:
    """Raise `Wrong` unless `got` (ms) can be the median of timed warm calls of `model`."""
    if len(model.durations) < 4:
        raise Wrong(f"the model ran {len(model.durations)} time(s): warm it up, then time several repeats")
    low, high = _latency_range(model)
    where = (f"a model whose calls took {statistics.median(model.steady_ms()):.1f} ms (median; every 4th "
             f"{_Sleepy.HICCUP}x, the first {model.durations[0]:.0f} ms)")
    if got < low:
        raise Wrong(f"{got:.4g} for {where}, less than each call sleeps ({model.ms:g} ms): time the model's forward "
                    "pass itself (time.perf_counter around model(x)), in milliseconds")
    if got > 0.5 * model.durations[0]:
        raise Wrong(f"{got:.1f} ms for {where}: run it a few times before timing (warm-up)")
    if got > high:
        raise Wrong(f"{got:.1f} ms for {where}: take the median of several repeats, not the mean")


def check_latency(latency_ms: Callable) -> bool:
    """04: ``latency_ms(model, x) -> milliseconds``: the typical time of one forward pass (eval mode, no grad,
    warm-up first, several repeats, their median), checked on a fast (4 ms) and a slow (12 ms) model that start
    cold and hiccup now and then, each against the durations its own calls took (no fixed clock threshold)."""
    latency_ms = without_library(latency_ms)

    def check() -> None:
        fast, slow = _Sleepy(4.0), _Sleepy(12.0)
        got_fast = float(latency_ms(fast, torch.zeros(1)))
        if not _fits(1e3 * got_fast, fast):              # not seconds: judged on the fast model alone
            _judge_latency(got_fast, fast)
        got_slow = float(latency_ms(slow, torch.zeros(1)))
        if _fits(1e3 * got_fast, fast) and _fits(1e3 * got_slow, slow):
            raise Wrong(f"{got_fast:.4g} and {got_slow:.4g} for models that take about 4 and 12 ms per call: "
                        "return milliseconds")
        _judge_latency(got_fast, fast)
        _judge_latency(got_slow, slow)
    return verdict("measuring latency", check, notebook="04", exercise="latency_ms")


def check_fold_batchnorm(fold: Callable) -> bool:
    """04: ``fold(conv, bn) -> conv``: one Conv2d computing ``bn(conv(x))`` in eval mode (the deploy form's
    folding), checked against `measure.fold_batchnorm` on convs with and without a bias."""
    fold = without_library(fold)

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
    return verdict("folding BatchNorm into the conv", check, notebook="04", exercise="fold")
