"""Measure models honestly: parameters, size on disk, FLOPs, latency and throughput.

Conventions used throughout (the notebooks quote these numbers, so they are fixed here):

- **FLOPs** come from ``torch.utils.flop_counter.FlopCounterMode``, which counts
  **2 FLOPs per multiply-add** and does *not* count bias additions, activations,
  pooling or element-wise adds. So a ``Conv2d`` costs
  ``2 * C_out * (C_in / groups) * k_h * k_w * H_out * W_out`` and a ``Linear``
  costs ``2 * N * in_features * out_features``, with or without bias.
  ``count_macs`` is ``count_flops // 2``. ``gflops`` means 10^9 FLOPs.
- **MB** means 10^6 bytes (not MiB).
- **Latency** is the median wall-clock time of one forward pass of a whole batch,
  in milliseconds, measured with ``torch.utils.benchmark.Timer`` in eval mode under
  ``torch.no_grad()`` after warm-up runs. **Throughput** is images per second:
  ``batch_size / median_seconds``.

Every function puts the model in eval mode while measuring and restores the
train/eval flag of *every* submodule afterwards; thread counts are restored too.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import os
import platform
from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

# torch.utils.benchmark imports cpp_extension, which logs "No CUDA runtime is found" on CPU-only
# machines: noise for a course run on laptops, so only errors from that logger are shown.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
from torch.utils import benchmark  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "count_parameters",
    "size_on_disk_mb",
    "count_flops",
    "count_macs",
    "flops_per_layer",
    "measure_latency",
    "profile",
    "compare",
    "machine_info",
    "FORMS",
    "fold_batchnorm",
    "deployment_form",
    "keep_freed_memory",
    "page_faults",
]


# --------------------------------------------------------------------------- validators


def _validate_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """Return ``input_shape`` as a tuple of positive ints, or raise a ``ValueError`` naming it."""
    ok = (
        isinstance(input_shape, (tuple, list, torch.Size))
        and len(input_shape) >= 2
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_shape)
    )
    if not ok:
        raise ValueError(
            f"input_shape must be a tuple of positive ints that starts with the batch dim, "
            f"e.g. (1, 3, 224, 224); got {input_shape!r}"
        )
    return tuple(input_shape)


def _validate_positive(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be a positive number; got {value!r}")


def _validate_num_threads(num_threads: int | None) -> int:
    """Return the thread count to use (``None`` means the current ``torch.get_num_threads()``)."""
    if num_threads is None:
        return torch.get_num_threads()
    if not isinstance(num_threads, int) or isinstance(num_threads, bool) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive int or None; got {num_threads!r}")
    return num_threads


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first parameter (CPU/float32 if it has none)."""
    for p in model.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def _resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """The device to put the input on; raise if the model lives elsewhere (we never move it)."""
    model_device, _ = _model_device_dtype(model)
    if device is None:
        return model_device
    device = torch.device(device)
    has_params = next(model.parameters(), None) is not None
    same = model_device.type == device.type and (
        device.index is None or model_device.index is None or device.index == model_device.index
    )
    if has_params and not same:
        raise ValueError(
            f"model parameters are on {model_device} but device={str(device)!r}; "
            f"call model.to({str(device)!r}) first or pass device={str(model_device)!r}"
        )
    return device


def _make_input(model: nn.Module, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """A deterministic random input of ``shape`` with the model's dtype, on ``device``."""
    _, dtype = _model_device_dtype(model)
    gen = torch.Generator().manual_seed(0)
    return torch.randn(shape, generator=gen, dtype=dtype).to(device)


# --------------------------------------------------------------------------- context helpers


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode; restore every submodule's own train/eval flag afterwards."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes.items():
            m.training = training


@contextlib.contextmanager
def _num_threads(n: int) -> Iterator[None]:
    """Run with ``torch.set_num_threads(n)``; restore the previous count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# --------------------------------------------------------------------------- static measures


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters in ``model`` (trainable or not; shared ones counted once).

    Buffers such as BatchNorm running statistics are not parameters and are not counted.
    """
    return sum(p.numel() for p in model.parameters())


def size_on_disk_mb(model: nn.Module) -> float:
    """Size of ``torch.save(model.state_dict())`` in MB (1 MB = 10^6 bytes).

    Includes buffers (e.g. BatchNorm running stats) and a small pickle overhead, so a
    float32 model is slightly more than ``4 * count_parameters(model) / 1e6`` MB.
    """
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 1e6


def _run_flop_counter(
    model: nn.Module, input_shape: Sequence[int], device: str | torch.device | None
) -> FlopCounterMode:
    """Run one eval-mode, no-grad forward pass under ``FlopCounterMode`` and return the counter."""
    shape = _validate_input_shape(input_shape)
    x = _make_input(model, shape, _resolve_device(model, device))
    counter = FlopCounterMode(display=False)
    with _eval_mode(model), torch.no_grad(), counter:
        model(x)
    return counter


def count_flops(
    model: nn.Module, input_shape: Sequence[int], *, device: str | torch.device | None = None
) -> int:
    """FLOPs of one forward pass on an input of ``input_shape`` (batch dim included).

    Counted by ``FlopCounterMode``: 2 FLOPs per multiply-add, bias/activations/pooling not
    counted (see the module docstring). FLOPs scale linearly with the batch size, so
    ``count_flops(m, (8, 3, 32, 32)) == 8 * count_flops(m, (1, 3, 32, 32))``.

    Args:
        model: the network; it is not moved, and its train/eval flags are restored.
        input_shape: e.g. ``(1, 3, 224, 224)`` for one ``(N, C, H, W)`` image.
        device: where to build the input; ``None`` means the model's device.
    """
    return int(_run_flop_counter(model, input_shape, device).get_total_flops())


def count_macs(
    model: nn.Module, input_shape: Sequence[int], *, device: str | torch.device | None = None
) -> int:
    """Multiply-accumulates of one forward pass: ``count_flops(...) // 2``.

    ``FlopCounterMode`` counts each multiply-add as 2 FLOPs, so MACs are half the FLOPs.
    """
    return count_flops(model, input_shape, device=device) // 2


def _tracker_names(model: nn.Module) -> dict[str, tuple[str, nn.Module]]:
    """Map FlopCounterMode's module keys (``"ResNet.layer1.0.conv1"``) to ``(fqn, module)``."""
    root = type(model).__name__
    return {(f"{root}.{fqn}" if fqn else root): (fqn, m) for fqn, m in model.named_modules()}


def flops_per_layer(model: nn.Module, input_shape: Sequence[int]) -> pd.DataFrame:
    """FLOPs of each leaf module (one without children) for one forward pass.

    Returns a DataFrame with one row per leaf module that has FLOPs, in ``named_modules``
    order, with columns ``module`` (qualified name, ``""`` if the model itself is a leaf),
    ``type`` (class name), ``flops`` (for the whole batch of ``input_shape``) and ``params``
    (the module's own parameters). FLOPs done by functional calls inside a non-leaf
    ``forward`` (e.g. ``torch.matmul`` in an attention block) are not attributed to any
    row, so ``flops.sum()`` can be less than :func:`count_flops`.
    """
    counts = _run_flop_counter(model, input_shape, None).get_flop_counts()
    names = _tracker_names(model)
    rows = []
    for key, (fqn, module) in names.items():
        flops = sum(counts.get(key, {}).values())
        if next(module.children(), None) is None and flops > 0:
            params = sum(p.numel() for p in module.parameters())
            rows.append({"module": fqn, "type": type(module).__name__, "flops": int(flops),
                         "params": params})
    return pd.DataFrame(rows, columns=["module", "type", "flops", "params"])


# --------------------------------------------------------------------------- deployment forms

#: How a model can be run when it is timed. Every form computes the same function as ``"eager"``
#: (up to float rounding) and is applied to a *copy*, so FLOPs, parameters and size are unchanged.
#:
#: - ``"eager"``: the model as it is, NCHW tensors (PyTorch's default).
#: - ``"fold_bn"``: each BatchNorm2d that directly follows a Conv2d is folded into that conv's
#:   weight and bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``) and replaced by ``Identity``.
#: - ``"channels_last"``: weights and the input in NHWC memory layout
#:   (``torch.channels_last``); on CPU, max-pool and BatchNorm have fast NHWC kernels.
#: - ``"deploy"``: ``fold_bn`` and ``channels_last`` together: a plain-PyTorch inference form
#:   with no deprecated or experimental API (no TorchScript, no compiler).
FORMS = ("eager", "fold_bn", "channels_last", "deploy")


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with every ``Conv2d -> BatchNorm2d`` pair folded into one conv.

    The pair is found by tracing with ``torch.fx``: a BatchNorm2d module whose only input is a
    Conv2d module's output, and that conv's output has no other reader. The conv then gets
    ``w' = w * gamma / sqrt(var + eps)`` and ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``
    (inference statistics), and the BatchNorm becomes ``nn.Identity``. The copy computes the same
    function as ``model`` in eval mode. Models that ``torch.fx`` cannot trace raise the tracer's error.
    """
    import torch.fx as fx
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    graph = fx.Tracer().trace(folded)
    modules = dict(folded.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0] if node.args else None
        if (isinstance(src, fx.Node) and src.op == "call_module"
                and isinstance(modules.get(src.target), nn.Conv2d) and len(src.users) == 1):
            pairs.append((src.target, node.target))
    for conv_name, bn_name in pairs:
        _set_submodule(folded, conv_name, fuse_conv_bn_eval(modules[conv_name], modules[bn_name]))
        _set_submodule(folded, bn_name, nn.Identity())
    return folded


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, module)


class _ChannelsLast(nn.Module):
    """Runs ``model`` (weights already NHWC) on the input converted to ``torch.channels_last``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)


def deployment_form(model: nn.Module, form: str = "deploy") -> nn.Module:
    """``model`` as it would be run for inference in one of :data:`FORMS` (a copy; ``"eager"``: itself).

    The conversion to ``channels_last`` of the input happens inside the returned module's
    ``forward``, so it is timed with the model (it is part of the cost of that form).
    """
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose one of {FORMS}")
    if form == "eager":
        return model
    runner = fold_batchnorm(model) if form in ("fold_bn", "deploy") else copy.deepcopy(model).eval()
    return _ChannelsLast(runner) if form in ("channels_last", "deploy") else runner


# --------------------------------------------------------------------------- memory allocator

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h> parameter numbers


def keep_freed_memory(threshold_bytes: int = 1 << 30) -> bool:
    """Make glibc's ``malloc`` keep freed memory in the process (Linux/glibc only). **Process-wide, one-way.**

    By default glibc hands large blocks (feature maps of a batch) back to the operating system when
    they are freed, so the next forward pass page-faults them in again: thousands of minor page
    faults per pass, a cost that grows with the activations (channels), not with the FLOPs, and that
    changes from run to run with the allocator's history.  This sets ``M_MMAP_THRESHOLD`` and
    ``M_TRIM_THRESHOLD`` (``mallopt(3)``) to `threshold_bytes`, so freed blocks are reused, as
    jemalloc or TCMalloc do (PyTorch's performance tuning guide recommends those for CPU inference).
    Calling ``mallopt`` also turns off glibc's dynamic thresholds for the rest of the process, so
    there is no undo.  Measure :func:`page_faults` to see the effect.

    Returns:
        True if glibc accepted both settings, False where there is no glibc (macOS, Windows, musl).
    """
    import ctypes
    import ctypes.util

    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    value = min(int(threshold_bytes), 2**31 - 1)
    return bool(mallopt(_M_MMAP_THRESHOLD, value)) and bool(mallopt(_M_TRIM_THRESHOLD, value))


def page_faults(
    model: nn.Module, input_shape: Sequence[int], *, runs: int = 10, warmup: int = 3, num_threads: int | None = None,
    form: str = "eager",
) -> dict[str, float]:
    """Minor page faults and wall-clock time per forward pass (Unix: ``resource.getrusage``).

    The model runs `warmup` untimed passes, then `runs` timed ones (eval mode, no grad, in `form`).
    Returns ``ms_per_pass`` (mean) and ``faults_per_pass`` (minor page faults of this process per
    pass: memory the OS had to map in, 4 KiB each; about 0 when freed memory is reused);
    ``faults_per_pass`` is NaN where ``resource`` is unavailable (Windows).
    """
    import time

    try:
        import resource

        def faults() -> float:
            return float(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
    except ImportError:  # Windows
        def faults() -> float:
            return math.nan
    shape = _validate_input_shape(input_shape)
    threads = _validate_num_threads(num_threads)
    x = _make_input(model, shape, _resolve_device(model, None))
    with _eval_mode(model), _num_threads(threads), torch.no_grad():
        runner = deployment_form(model, form)
        for _ in range(warmup):
            runner(x)
        sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
        sync()
        f0, t0 = faults(), time.perf_counter()
        for _ in range(runs):
            runner(x)
        sync()
        seconds, f1 = time.perf_counter() - t0, faults()
    return {"ms_per_pass": 1e3 * seconds / runs, "faults_per_pass": (f1 - f0) / runs}


# --------------------------------------------------------------------------- timing


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
    """Time one forward pass of a batch of shape ``input_shape`` with ``torch.utils.benchmark``.

    ``form`` (one of :data:`FORMS`) times a copy of the model converted by
    :func:`deployment_form`, e.g. ``"deploy"`` (BatchNorm folded, channels-last); the model
    itself is not changed.

    With ``compiled=True`` the model is timed as it would be deployed: through
    ``torch.compile`` (BatchNorm folded, kernels generated for these channel counts; compiling
    takes seconds and needs a C++ compiler on CPU). FLOPs and weights do not change.

    The model runs in eval mode under ``torch.no_grad()``; ``warmup`` untimed passes come
    first, then ``Timer.blocked_autorange(min_run_time=...)``. On CUDA the Timer
    synchronises the device around each timed block. The model is not moved: it must
    already be on ``device``. Thread count and train/eval flags are restored afterwards.

    Returns:
        ``median_ms``, ``iqr_ms``, ``mean_ms``: per forward pass of the whole batch (ms);
        ``runs``: forward passes timed; ``batch_size``; ``num_threads``; ``device`` (str);
        ``throughput``: images/s, ``batch_size / median seconds``; ``compiled``; ``form``.
    """
    shape = _validate_input_shape(input_shape)
    threads = _validate_num_threads(num_threads)
    _validate_positive("min_run_time", min_run_time)
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative int; got {warmup!r}")
    dev = _resolve_device(model, device)
    x = _make_input(model, shape, dev)
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose one of {FORMS}")
    with _eval_mode(model), _num_threads(threads), torch.no_grad():
        runner = deployment_form(model, form)
        runner = _compile(runner) if compiled else runner
        timer = benchmark.Timer(stmt="model(x)", globals={"model": runner, "x": x}, num_threads=threads)
        for _ in range(warmup if not compiled else max(warmup, 2)):
            runner(x)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        m = timer.blocked_autorange(min_run_time=min_run_time)
    return {
        "median_ms": m.median * 1e3,
        "iqr_ms": m.iqr * 1e3,
        "mean_ms": m.mean * 1e3,
        "runs": len(m.raw_times) * m.number_per_run,
        "batch_size": shape[0],
        "num_threads": threads,
        "device": str(dev),
        "throughput": shape[0] / m.median,
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
    shape = _validate_input_shape(input_shape)
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


# --------------------------------------------------------------------------- comparison


def _ratio(reference: float, value: float) -> float:
    """``reference / value``, with ``inf`` for x/0 and ``nan`` for 0/0."""
    if value == 0:
        return math.nan if reference == 0 else math.inf
    return reference / value


def _validate_compare_args(
    models: dict[str, nn.Module], reference: str | None, accuracy: dict[str, float] | None
) -> str:
    """Check ``compare``'s arguments and return the reference name."""
    if not isinstance(models, dict) or not models:
        raise ValueError("models must be a non-empty dict like {'original': model, 'pruned': pruned}")
    for name, model in models.items():
        if not isinstance(model, nn.Module):
            raise TypeError(f"models[{name!r}] is a {type(model).__name__}, not an nn.Module")
    reference = next(iter(models)) if reference is None else reference
    if reference not in models:
        raise ValueError(f"reference {reference!r} is not in models; choose one of {list(models)}")
    unknown = set(accuracy or {}) - set(models)
    if unknown:
        raise ValueError(f"accuracy has names {sorted(unknown)} that are not in models {list(models)}")
    return reference


def compare(
    models: dict[str, nn.Module],
    input_shape: Sequence[int],
    *,
    reference: str | None = None,
    num_threads: int | None = None,
    device: str | torch.device = "cpu",
    min_run_time: float = 1.0,
    accuracy: dict[str, float] | None = None,
    compiled: bool = False,
    form: str = "eager",
) -> pd.DataFrame:
    """Profile several models and compare them with a reference model.

    Args:
        models: name -> model, all already on ``device``. Measured one after another.
        input_shape: batch shape for latency, e.g. ``(1, 3, 224, 224)``; FLOPs are per image.
        reference: the name to compare against; default the first key of ``models``.
        accuracy: optional name -> accuracy; adds an ``accuracy`` column (NaN if missing).
        compiled: time every model through ``torch.compile`` (see `measure_latency`).
        form: time every model in this form (one of :data:`FORMS`, see `measure_latency`);
            parameters, size and FLOPs are always those of the models as given.

    Returns:
        A DataFrame indexed by name with columns ``params``, ``size_mb``, ``gflops``,
        ``latency_ms``, ``latency_iqr_ms``, ``throughput`` and four ratios, each written so
        that **bigger than 1 means better than the reference** (1.0 on the reference row):
        ``speedup`` = ref latency / latency ("x faster"), ``size_ratio`` = ref size / size
        ("x smaller"), ``flops_ratio`` = ref FLOPs / FLOPs ("x fewer FLOPs"),
        ``params_ratio`` = ref params / params ("x fewer parameters").
    """
    reference = _validate_compare_args(models, reference, accuracy)
    rows = {}
    for name, model in models.items():
        p = profile(model, input_shape, num_threads=num_threads, device=device,
                    min_run_time=min_run_time, compiled=compiled, form=form)
        rows[name] = {k: p[k] for k in
                      ("params", "size_mb", "gflops", "latency_ms", "latency_iqr_ms", "throughput")}
    df = pd.DataFrame.from_dict(rows, orient="index")
    ref = df.loc[reference]
    for column, source in [("speedup", "latency_ms"), ("size_ratio", "size_mb"),
                           ("flops_ratio", "gflops"), ("params_ratio", "params")]:
        df[column] = [_ratio(ref[source], v) for v in df[source]]
    if accuracy is not None:
        df["accuracy"] = [accuracy.get(name, math.nan) for name in df.index]
    return df


# --------------------------------------------------------------------------- environment


def _cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured: for benchmark scripts and the README.

    Returns ``platform``, ``machine``, ``processor`` (CPU model), ``cpu_count`` (logical CPUs),
    ``python``, ``torch``, ``num_threads`` (``torch.get_num_threads()``) and ``cuda_device``
    (GPU name, or ``None`` without CUDA).
    """
    cuda = torch.cuda.is_available()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "num_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
    }
