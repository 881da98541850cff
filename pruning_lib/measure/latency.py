"""Latency: time one forward pass of a batch honestly (eval mode, no grad, warm-up, median and spread).

**Latency** is the median wall-clock time of one forward pass of a whole batch, in milliseconds,
measured in the library's one timing harness (`harness.interleaved`) after warm-up runs.  **Throughput** is images per
second: ``batch_size / median_seconds``.  The model's train/eval flags and the thread count are
restored afterwards.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .. import runtime
from .checks import make_input, validate_input_shape, validate_num_threads, validate_positive
from .counting import count_flops, count_parameters, size_on_disk_mb
from .deploy import FORMS, deployment_form
from .harness import interleaved, paired_speedup
from .runtimes import RUNTIMES, checked_runner


__all__ = ["forward_runner", "measure_latency", "measured_speedup", "profile"]


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    num_threads: int | None = None,
    device: str | torch.device = "cpu",
    min_run_time: float = 1.0,
    warmup: int = 3,
    compiled: bool = False,
    form: str = "eager",
) -> dict[str, Any]:
    """Time one forward pass of a batch of shape ``input_shape`` in the library's one harness (`harness`).

    ``form`` (one of :data:`FORMS`) times a copy of the model converted by
    :func:`deployment_form`, e.g. ``"deploy"`` (BatchNorm folded, channels-last); the model
    itself is not changed.  A registered runtime (`runtimes.RUNTIMES`: ``"onnxruntime"``, ``"openvino"``, any
    added with `runtimes.register_runtime`) times the model in that runtime on the CPU with ``num_threads``
    threads, its outputs checked against PyTorch's first (ONNX runtimes: on the model exported to ONNX).

    With ``compiled=True`` the model is timed as it would be deployed: through
    ``torch.compile`` (BatchNorm folded, kernels generated for these channel counts; compiling
    takes seconds and needs a C++ compiler on CPU). FLOPs and weights do not change.

    The model runs in eval mode under ``torch.no_grad()``; ``warmup`` untimed passes come first, then as many
    timed passes as fill about `min_run_time` seconds (at least 5), each timed alone (`harness.interleaved` with one
    runner; on CUDA every pass ends with a synchronisation).  The model is not moved: it must already be on
    ``device``.  Thread count and train/eval flags are restored afterwards.

    Returns:
        ``median_ms``, ``iqr_ms``, ``mean_ms``: per forward pass of the whole batch (ms);
        ``runs``: forward passes timed; ``batch_size``; ``num_threads``; ``device`` (str);
        ``throughput``: images/s, ``batch_size / median seconds``; ``compiled``; ``form``.
    """
    shape = validate_input_shape(input_shape)
    threads = validate_num_threads(num_threads)
    validate_positive("min_run_time", min_run_time)
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative int; got {warmup!r}")
    dev = runtime.resolve_device(model, device)
    x = make_input(model, shape, dev)
    if form not in FORMS + RUNTIMES:
        raise ValueError(f"unknown form {form!r}; choose one of {FORMS + RUNTIMES} (or register a runtime)")
    with runtime.mode(model), runtime.num_threads(threads), torch.no_grad():
        run = forward_runner(model, x, form, threads, compiled=compiled)
        for _ in range(max(warmup, 2 if compiled else 1)):
            run()
        start = time.perf_counter()
        run()
        once = time.perf_counter() - start
        passes = int(min(10_000, max(5, min_run_time / max(once, 1e-6))))
        samples = [r["model"] for r in interleaved({"model": run}, rounds=passes, calls=1)]
    q1, median, q3 = statistics.quantiles(samples, n=4) if len(samples) > 1 else (samples[0],) * 3
    median = statistics.median(samples)
    return {
        "median_ms": median,
        "iqr_ms": q3 - q1,
        "mean_ms": statistics.fmean(samples),
        "runs": len(samples),
        "batch_size": shape[0],
        "num_threads": threads,
        "device": str(dev),
        "throughput": shape[0] / (median / 1e3),
        "compiled": compiled,
        "form": form,
    }


def _compile(model: nn.Module) -> Any:
    """``torch.compile(model)`` after resetting Dynamo: models of one class share ``forward``'s code
    object, and after a few recompilations Dynamo would silently fall back to eager."""
    torch._dynamo.reset()
    compiled = torch.compile(model)

    def run(x: torch.Tensor) -> torch.Tensor:
        try:
            return compiled(x)
        except Exception as e:  # inductor raises backend-specific errors (no compiler, ...)
            raise RuntimeError(f"torch.compile could not build {type(model).__name__} ({type(e).__name__}: "
                               f"{str(e)[:300]}); on CPU it needs a C++ compiler (gcc or clang). "
                               "Measure with compiled=False instead.") from e
    return run


def profile(model: nn.Module, input_shape: Sequence[int], **latency_kwargs: Any) -> dict[str, Any]:
    """Everything the course reports about one model, in one dict.

    Returns ``params`` (count), ``size_mb`` (10^6 bytes), ``gflops`` (10^9 FLOPs for *one*
    image, i.e. ``input_shape`` with batch dim 1), ``latency`` (the full
    :func:`measure_latency` dict at the given batch), and for convenience ``latency_ms``,
    ``latency_iqr_ms`` (ms per batch) and ``throughput`` (images/s) taken from it.
    ``latency_kwargs`` go to :func:`measure_latency` (``num_threads``, ``device``, ...).
    """
    shape = validate_input_shape(input_shape)
    latency = measure_latency(model, shape, **latency_kwargs)
    return {
        "params": count_parameters(model),
        "size_mb": size_on_disk_mb(model),
        "gflops": count_flops(model, (1, *shape[1:]), device=latency["device"]) / 1e9,
        "latency": latency,
        "latency_ms": latency["median_ms"],
        "latency_iqr_ms": latency["iqr_ms"],
        "throughput": latency["throughput"],
    }


def forward_runner(model: nn.Module, x: torch.Tensor, form: str = "deploy", num_threads: int = 1, *,
                   compiled: bool = False) -> Any:
    """One forward pass of `model` on `x` in `form` (a PyTorch form of `FORMS` or a registered runtime), as a
    function of nothing: what the timing harness (`harness.interleaved`) calls.  Call it under ``torch.no_grad()``
    with the thread count set (`runtime.num_threads`).  On CUDA it waits for the device (each pass is timed whole);
    `compiled` runs the form through ``torch.compile``."""
    if form in RUNTIMES:
        run, batch = checked_runner(model, x, form, num_threads=num_threads), x.detach().cpu().numpy()
        return lambda: run(batch)
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose one of {FORMS + RUNTIMES}")
    deployed = deployment_form(model.eval(), form)
    deployed = _compile(deployed) if compiled else deployed
    if x.device.type == "cuda":
        def synchronised():
            out = deployed(x)
            torch.cuda.synchronize(x.device)
            return out
        return synchronised
    return lambda: deployed(x)


def measured_speedup(reference: nn.Module, model: nn.Module, input_shape: Sequence[int], *, form: str = "deploy",
                     num_threads: int = 1, rounds: int = 9, calls: int = 5, seed: int = 0) -> dict[str, float]:
    """How much faster `model` runs than `reference`, end to end, both timed in one interleaved harness.

    Each round times both `calls` times in a random order; the speedup is the median of the rounds' ratios
    (paired: a slow moment of the machine hits both).  Returns `harness.paired_speedup`'s ``speedup``, ``noise``,
    ``low``, ``high``, ``reference_ms`` and ``ms`` (medians per batch of `input_shape`).  Both run on the CPU.
    """
    shape = validate_input_shape(input_shape)
    x = make_input(reference, shape, torch.device("cpu"))
    with runtime.mode(reference, training=False), runtime.mode(model, training=False), \
            runtime.num_threads(num_threads), torch.no_grad():
        runners = {"reference": forward_runner(reference, x, form, num_threads),
                   "model": forward_runner(model, x, form, num_threads)}
        timed = interleaved(runners, rounds=rounds, calls=calls, seed=seed)
    return paired_speedup(timed, "reference", "model")
