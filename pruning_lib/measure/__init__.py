"""Measuring models honestly: counting, deployment forms, latency, the allocator, comparison, per-layer time.

- `counting`: parameters, size on disk (MB = 10^6 bytes), FLOPs (2 per multiply-add), FLOPs per layer.
- `deploy`: the forms a model is timed in: ``eager``, ``fold_bn``, ``channels_last``, ``deploy`` (both).
- `harness`: the one timing harness: several runners timed in turns (`interleaved`), medians and their noise,
  paired speedups.
- `latency`: `measure_latency` (median and spread of one batch's forward pass), `profile`, and
  `measured_speedup` (two networks end to end in the harness: what a speed target is judged by).
- `runtimes`: the runtime you ship with: ONNX export, the output check, ONNX Runtime (and OpenVINO) sessions;
  ``form="onnxruntime"`` times a model there with the same protocol.  Each runtime is one `Runtime` entry of a
  registry (`runtime_registry`; `register_runtime` adds one).
- `checks`: the argument checks and the input batch that counting, latency and memory share.
- `memory`: page faults per pass, and `keep_freed_memory` (glibc keeps freed feature maps for reuse).
- `machine`: `machine_info`, where the numbers were measured.
- `comparison`: `compare`, one table with ratios against a reference; `side_by_side` and `batch_sweep`;
  `speedup_overview` and `runtime_overview`, a `side_by_side` table per model and per runtime.
- `layers`: where the time goes, layer by layer.

The most used functions are importable from here: ``from pruning_lib import measure;
measure.compare({...}, (64, 1, 28, 28))``.
"""

from .comparison import batch_sweep, compare, ratio, runtime_overview, side_by_side, speedup_overview
from .counting import count_flops, count_macs, count_parameters, flops_per_layer, size_on_disk_mb
from .deploy import FORMS, ChannelsLast, deployment_form, fold_batchnorm
from .harness import interleaved, paired_speedup, spread
from .latency import forward_runner, measure_latency, measured_speedup, profile
from .layers import explain_gap, layer_times, per_layer_table, per_layer_tables, time_by_type
from .machine import machine_info
from .memory import keep_freed_memory, page_faults
from .runtimes import (RUNTIMES, Runtime, available_runtimes, check_onnx, export_onnx, register_runtime,
                       unregister_runtime)

__all__ = ["FORMS", "RUNTIMES", "ChannelsLast", "Runtime", "available_runtimes", "batch_sweep", "check_onnx", "compare",
           "count_flops", "count_macs", "count_parameters", "deployment_form", "explain_gap",
           "export_onnx", "flops_per_layer", "fold_batchnorm", "forward_runner", "interleaved", "keep_freed_memory",
           "layer_times", "machine_info", "measure_latency", "measured_speedup", "paired_speedup", "spread", "page_faults", "per_layer_table", "per_layer_tables", "profile", "ratio",
           "register_runtime", "runtime_overview", "side_by_side", "size_on_disk_mb", "speedup_overview", "time_by_type", "unregister_runtime"]
