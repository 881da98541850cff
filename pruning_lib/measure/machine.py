"""Where the numbers were measured: CPU model, core count, versions (for benchmark scripts and the README)."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

__all__ = ["machine_info"]


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
