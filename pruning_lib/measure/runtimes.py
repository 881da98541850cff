"""The runtime you ship with: export to ONNX, check the output against PyTorch, time it in ONNX Runtime (or OpenVINO).

- `Runtime` and `register_runtime` (`runtime_registry`): every runtime `measure.measure_latency` can time (as
  ``form=``) is one entry of one registry.  ``onnxruntime`` and ``openvino`` are registered below;
  `available_runtimes` says which ones can run here and, if not, what to install.
- `export_onnx`: ``torch.onnx.export`` with the exporter torch recommends (``dynamo=True``), one self-contained
  ``.onnx`` file with a dynamic batch dimension; a model that fails to export is named down to the layer.
- `check_onnx`: the file's outputs against PyTorch's on a batch; `OnnxMismatchError` when they differ beyond
  the tolerance (a broken or foreign file is reported, never timed).
- `checked_runner`: what `measure_latency` times: the model exported once per weights (or the file `export_onnx`
  last wrote for it), checked, and loaded in the runtime; a few are kept, the least recently used dropped.

ONNX Runtime folds each BatchNorm into its conv and fuses the ReLU after it, so what is left to run is the convs,
the pooling and the additions.  The runtimes run on the CPU here, whatever device the model is on.
``onnx`` and ``onnxruntime`` come with the ``deploy`` extra (``pip install -e ".[deploy]"``, included in
``dev``); OpenVINO is optional (``pip install openvino``).  A missing package raises `MissingRuntimeError`,
which says what to install.
"""

from __future__ import annotations

import copy
import hashlib
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checkpoints import fingerprint
from .runtime_registry import (DEPLOY_EXTRA, EXPORT_PACKAGES, RUNTIMES, MissingRuntimeError, OnnxExportError,
                               OnnxMismatchError, OutputMismatchError, Runner, Runtime, available_runtimes,
                               first_line, get_runtime, register_runtime, require, unregister_runtime)

__all__ = ["EXPORTERS", "EXPORT_PACKAGES", "RUNTIMES", "MissingRuntimeError", "OnnxExportError", "OnnxMismatchError",
           "OutputMismatchError", "Runner", "Runtime", "available_runtimes", "check_onnx", "checked_runner",
           "export_onnx", "get_runtime", "onnx_session", "register_runtime", "require", "runner",
           "unregister_runtime"]


# --------------------------------------------------------------------------- export


def _leaf_inputs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module, tuple]]:
    """Each leaf module with the inputs it received in one forward pass, in the order they ran."""
    seen: list[tuple[str, nn.Module, tuple]] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: seen.append((name, mod, args)))
             for name, m in model.named_modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


#: How a model is exported: ``"dynamo"`` (torch's recommended exporter) or ``"torchscript"`` (the older one, about
#: fifty times faster for a small module: what the latency model uses for its blocks; the dynamo exporter is used
#: where torch no longer has it).
EXPORTERS = ("dynamo", "torchscript")


def _export(model: nn.Module, x: torch.Tensor, path: Path, dynamic_batch: bool, exporter: str = "dynamo") -> None:
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}; got {exporter!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
            try:
                torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["output"], dynamo=False,
                                  dynamic_axes=axes)
                return
            except Exception:  # noqa: BLE001 - a torch without the old exporter, or a module it cannot export
                pass
        require("onnxscript")
        shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
        torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["output"], dynamo=True,
                          dynamic_shapes=shapes, external_data=False, verbose=False)


def _failing_layer(model: nn.Module, x: torch.Tensor) -> str:
    """The first leaf layer (in forward order) that does not export on its own, or a note that each one does."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, module, args in _leaf_inputs(model, x):
            if len(args) != 1 or not isinstance(args[0], torch.Tensor):
                continue
            try:
                _export(module, args[0], Path(tmp) / "layer.onnx", dynamic_batch=False)
            except MissingRuntimeError:
                raise
            except Exception as err:  # the exporter raises many kinds
                return f"layer {name!r} ({type(module).__name__}): {first_line(err)}"
    return "every layer exports on its own, so the failure is in the model's forward code between layers"


def export_onnx(model: nn.Module, path: str | Path, input_shape: Sequence[int], *, dynamic_batch: bool = True,
                exporter: str = "dynamo") -> Path:
    """Export a CPU copy of `model` (eval mode) to one self-contained ONNX file; returns its path.

    Args:
        input_shape: a batch shape ``(N, C, H, W)`` to trace with; with `dynamic_batch` the file accepts any N.
        exporter: ``"dynamo"`` (torch's recommended exporter) or ``"torchscript"`` (`EXPORTERS`).

    Raises:
        OnnxExportError: the export failed; the message names the first layer that does not export.
        MissingRuntimeError: the exporter's packages are not installed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu = copy.deepcopy(model).cpu().eval()
    x = torch.randn(*input_shape)
    try:
        _export(cpu, x, path, dynamic_batch, exporter)
    except MissingRuntimeError:
        raise
    except Exception as err:
        raise OnnxExportError(f"torch.onnx.export could not export {type(model).__name__}: "
                              f"{_failing_layer(cpu, x)}") from err
    _remember_export(model, tuple(input_shape[1:]) if dynamic_batch else tuple(input_shape), path.resolve())
    return path


# --------------------------------------------------------------------------- the runtimes registered here


def onnx_session(path: str | Path, *, num_threads: int = 1) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU with all graph optimisations and `num_threads` intra-op threads."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads, options.inter_op_num_threads = num_threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's InvalidProtobuf, Fail, ...
        raise OnnxMismatchError(f"{path} is not a valid ONNX model ({first_line(err)}); "
                                "export it again with export_onnx") from err


def _onnxruntime_runner(path: Path, num_threads: int) -> Runner:
    session = onnx_session(path, num_threads=num_threads)
    name = session.get_inputs()[0].name
    return lambda a: session.run(None, {name: a})[0]


def _openvino_runner(path: Path, num_threads: int) -> Runner:
    ov = require("openvino")
    core = ov.Core()
    # float32 as in PyTorch: on CPUs with bfloat16 units OpenVINO would otherwise compute in bfloat16
    compiled = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": num_threads, "PERFORMANCE_HINT": "LATENCY",
                                                     "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    return lambda a: request.infer({0: a})[compiled.output(0)]


register_runtime(Runtime("onnxruntime", ("onnxruntime",), from_onnx=_onnxruntime_runner, install=DEPLOY_EXTRA))
register_runtime(Runtime("openvino", ("openvino",), from_onnx=_openvino_runner,
                         install="pip install openvino (optional)"))


def runner(path: str | Path, runtime: str = "onnxruntime", *, num_threads: int = 1) -> Runner:
    """The ONNX file at `path` in `runtime` as a function of a float32 numpy batch, returning the output array."""
    load = get_runtime(runtime).from_onnx
    if load is None:
        raise ValueError(f"runtime {runtime!r} builds its runner from the model, not from an ONNX file")
    return load(Path(path), num_threads)


# --------------------------------------------------------------------------- the output check


def _checked(build: Callable[[], Runner], model: nn.Module, x: torch.Tensor, *, what: str, runtime: str,
             error: type[OutputMismatchError], rtol: float, atol: float) -> tuple[Runner, float]:
    """Build a runner and compare its outputs on `x` with `model`'s (eval mode, CPU): the runner and the largest
    absolute difference, or `error` saying how `what` differs (it does not build or run, other shape, values)."""
    cpu = copy.deepcopy(model).cpu().eval()
    with torch.no_grad():
        want = cpu(x.cpu()).numpy()
    try:
        run = build()
        got = np.asarray(run(x.cpu().numpy().astype(np.float32)))
    except (OutputMismatchError, MissingRuntimeError):
        raise
    except Exception as err:
        raise error(f"{what} does not run on a batch of shape {tuple(x.shape)} in {runtime} "
                    f"({first_line(err)})") from err
    if got.shape != want.shape:
        raise error(f"{what} gives outputs of shape {got.shape}, the model {want.shape}: "
                    "it was built from another model")
    diff = float(np.max(np.abs(got - want))) if want.size else 0.0
    if not np.allclose(got, want, rtol=rtol, atol=atol):
        raise error(f"{what}'s outputs differ from PyTorch's by up to {diff:.3g} (tolerance {atol:g} + {rtol:g} x "
                    f"|output|) in {runtime}: it is broken or was built from another model, so it is not timed")
    return run, diff


def check_onnx(path: str | Path, model: nn.Module, x: torch.Tensor, *, runtime: str = "onnxruntime",
               rtol: float = 1e-4, atol: float = 1e-5) -> float:
    """The largest absolute difference between the file's outputs and `model`'s on `x` (eval mode, CPU).

    Raises:
        OnnxMismatchError: some output differs by more than ``atol + rtol * |PyTorch's output|`` (or the
            file is not a valid ONNX model).
    """
    get_runtime(runtime)
    return _checked(lambda: runner(path, runtime), model, x, what=str(path), runtime=runtime,
                    error=OnnxMismatchError, rtol=rtol, atol=atol)[1]


# --------------------------------------------------------------------------- what measure_latency times


class _Lru:
    """A dict that keeps its `maxsize` most recently used entries; `on_evict(key, value)` sees each one dropped."""

    def __init__(self, maxsize: int, on_evict: Callable[[Any, Any], None] | None = None) -> None:
        self.maxsize, self.on_evict, self.entries = maxsize, on_evict, OrderedDict()

    def get(self, key: Any) -> Any:
        if key not in self.entries:
            return None
        self.entries.move_to_end(key)
        return self.entries[key]

    def put(self, key: Any, value: Any) -> None:
        self.entries[key] = value
        self.entries.move_to_end(key)
        while len(self.entries) > self.maxsize:
            dropped = self.entries.popitem(last=False)
            if self.on_evict is not None:
                self.on_evict(*dropped)

    def __len__(self) -> int:
        return len(self.entries)


_EXPORT_DIR: tempfile.TemporaryDirectory | None = None


def _delete_if_ours(key: str, entry: tuple[Path, tuple[int, int] | None]) -> None:
    """A file exported into the temporary folder is deleted when it is forgotten (one `export_onnx` wrote is kept)."""
    if _EXPORT_DIR is not None and entry[0].parent == Path(_EXPORT_DIR.name).resolve():
        entry[0].unlink(missing_ok=True)


_EXPORTED = _Lru(16, on_evict=_delete_if_ours)   # key -> (file, its mtime and size)
_RUNNERS = _Lru(8)                               # (key, runtime, threads) -> runner (an ONNX session is big)


def _key(model: nn.Module, image_shape: Sequence[int]) -> str:
    """Same architecture, weights and image shape, same key (so one export serves every timing of a model)."""
    return hashlib.sha256(f"{model!r}{tuple(image_shape)}{fingerprint(model)}".encode()).hexdigest()


def _signature(path: Path) -> tuple[int, int] | None:
    return (path.stat().st_mtime_ns, path.stat().st_size) if path.exists() else None


def _remember_export(model: nn.Module, shape: Sequence[int], path: Path) -> None:
    """Let `checked_runner` time this file instead of exporting the same weights again, as long as the file
    is not changed on disk (written over by another export, edited, deleted).  `shape` is one image's shape for a
    file with a dynamic batch, the whole batch's for a file exported at one batch size."""
    _EXPORTED.put(_key(model, shape), (path, _signature(path)))


def _exported(key: str) -> Path | None:
    """The file exported for `key`, if it is still exactly as it was written."""
    path, signature = _EXPORTED.get(key) or (None, None)
    return path if path is not None and _signature(path) == signature else None


def _export_for(model: nn.Module, key: str, x: torch.Tensor, exporter: str = "dynamo", fixed: bool = False) -> Path:
    """The file exported for `key`: the one remembered if unchanged, else a new export into a temporary folder
    (with a dynamic batch, or at `x`'s batch when `fixed`)."""
    global _EXPORT_DIR
    if not _exported(key):
        _EXPORT_DIR = _EXPORT_DIR or tempfile.TemporaryDirectory(prefix="pruning_onnx_")
        shape = tuple(x.shape) if fixed else (min(len(x), 2), *x.shape[1:])
        export_onnx(model, Path(_EXPORT_DIR.name) / f"{key[:16]}.onnx", shape, dynamic_batch=not fixed,
                    exporter=exporter)                                      # remembered
    return _exported(key)


def checked_runner(model: nn.Module, x: torch.Tensor, runtime: str, *, num_threads: int = 1,
                   rtol: float = 1e-4, atol: float = 1e-5, exporter: str = "dynamo", fixed_batch: bool = False) -> Runner:
    """`model` as a runner of the registered `runtime`, its outputs checked against PyTorch's on `x[:8]` (on all of
    `x` with `fixed_batch`: a model that only runs at `x`'s batch, such as a block of the latency model whose other
    inputs are buffers of that batch).

    Built once per process for the same weights, image shape, runtime and threads (the last few are kept), so
    timing a model again costs only the timing.  A runtime that loads ONNX files gets the file `export_onnx`
    last wrote for these weights, as long as it is unchanged on disk, else one exported into a temporary folder.

    Raises:
        OutputMismatchError: the runner's outputs differ from PyTorch's (`OnnxMismatchError` for an ONNX file).
        MissingRuntimeError: a package it needs is not installed.
    """
    entry = get_runtime(runtime)
    for package in entry.needs:
        require(package)
    key = _key(model, tuple(x.shape) if fixed_batch else tuple(x.shape[1:]))
    cached = (key, runtime, num_threads)
    run = _RUNNERS.get(cached)
    probe = x if fixed_batch else x[:8]
    if entry.from_onnx is not None:
        if run is not None and _exported(key):
            return run
        path = _export_for(model, key, x, exporter, fixed=fixed_batch)
        run, _ = _checked(lambda: entry.from_onnx(path, num_threads), model, probe, what=str(path),
                          runtime=runtime, error=OnnxMismatchError, rtol=rtol, atol=atol)
    else:
        if run is not None:
            return run
        example = x.detach().cpu()
        run, _ = _checked(lambda: entry.from_model(copy.deepcopy(model).cpu().eval(), example, num_threads),
                          model, probe, what=f"the runner built from {type(model).__name__}", runtime=runtime,
                          error=OutputMismatchError, rtol=rtol, atol=atol)
    _RUNNERS.put(cached, run)
    return run
