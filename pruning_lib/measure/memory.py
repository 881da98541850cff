"""The allocator's part of the time: page faults per forward pass, and keeping freed memory (glibc)."""

from __future__ import annotations

import math
import platform
from collections.abc import Sequence

import torch
from torch import nn

from .. import runtime
from .checks import make_input, validate_input_shape, validate_num_threads
from .deploy import deployment_form

__all__ = ["keep_freed_memory", "page_faults"]

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
    shape = validate_input_shape(input_shape)
    threads = validate_num_threads(num_threads)
    x = make_input(model, shape, runtime.resolve_device(model, None))
    with runtime.mode(model), runtime.num_threads(threads), torch.no_grad():
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
