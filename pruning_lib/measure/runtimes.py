"""The runtime you ship with: export to ONNX, check the file against PyTorch, time it in ONNX Runtime (or OpenVINO).

- `export_onnx`: ``torch.onnx.export`` with the exporter torch recommends (``dynamo=True``), one self-contained
  ``.onnx`` file with a dynamic batch dimension; a model that fails to export is named down to the layer.
- `check_onnx`: the file's outputs against PyTorch's on a batch; `OnnxMismatchError` when they differ beyond
  the tolerance (a broken or foreign file is reported, never timed).
- `onnx_session` / `runner`: an ``onnxruntime.InferenceSession`` (graph optimisations on, intra-op threads
  set) or an OpenVINO compiled model, as a function of a numpy batch; `measure.measure_latency` times it with
  the same protocol as PyTorch (warm-up, ``torch.utils.benchmark``, median and spread) when ``form`` is
  ``"onnxruntime"`` or ``"openvino"``.

ONNX Runtime folds each BatchNorm into its conv and fuses the ReLU after it, so what is left to run is the convs,
the pooling and the additions.  Both runtimes run on the CPU here, whatever device the model is on.
``onnx`` and ``onnxruntime`` come with the ``deploy`` extra (``pip install -e ".[deploy]"``, included in
``dev``); OpenVINO is optional (``pip install openvino``).  A missing package raises `MissingRuntimeError`,
which says what to install.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checkpoints import fingerprint

__all__ = ["RUNTIMES", "MissingRuntimeError", "OnnxExportError", "OnnxMismatchError", "available_runtimes",
           "check_onnx", "checked_runner", "export_onnx", "onnx_session", "require", "runner"]

#: Runtimes other than PyTorch that `measure_latency` can time (as ``form=``).
RUNTIMES = ("onnxruntime", "openvino")
_PACKAGES = {"onnx": "onnx", "onnxruntime": "onnxruntime", "onnxscript": "onnxscript", "openvino": "openvino"}


class MissingRuntimeError(ImportError):
    """A package that exporting or timing needs is not installed; the message says how to install it."""


class OnnxExportError(RuntimeError):
    """``torch.onnx.export`` failed; the message names the first layer that does not export."""


class OnnxMismatchError(ValueError):
    """An ONNX file's outputs differ from the PyTorch model's beyond the tolerance."""


def require(package: str) -> Any:
    """Import `package` (``onnx``, ``onnxruntime``, ``onnxscript``, ``openvino``) or say how to install it."""
    try:
        return importlib.import_module(_PACKAGES.get(package, package))
    except ImportError as err:
        extra = ("pip install openvino (optional)" if package == "openvino"
                 else 'pip install -e ".[deploy]" (or: pip install onnx onnxruntime onnxscript)')
        raise MissingRuntimeError(f"{package} is not installed ({err}); install it with: {extra}") from err


def available_runtimes() -> dict[str, str | None]:
    """``{runtime: None}`` when it can be used here, else the reason it cannot (for a notebook to print)."""
    out: dict[str, str | None] = {}
    for name, needs in (("onnxruntime", ("onnx", "onnxscript", "onnxruntime")), ("openvino", ("onnx", "openvino"))):
        try:
            for package in needs:
                require(package)
            out[name] = None
        except MissingRuntimeError as err:
            out[name] = str(err)
    return out


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


def _export(model: nn.Module, x: torch.Tensor, path: Path, dynamic_batch: bool) -> None:
    require("onnxscript")
    shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
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
                return f"layer {name!r} ({type(module).__name__}): {type(err).__name__}: {str(err).splitlines()[0][:300]}"
    return "every layer exports on its own, so the failure is in the model's forward code between layers"


def export_onnx(model: nn.Module, path: str | Path, input_shape: Sequence[int], *, dynamic_batch: bool = True) -> Path:
    """Export a CPU copy of `model` (eval mode) to one self-contained ONNX file; returns its path.

    Args:
        input_shape: a batch shape ``(N, C, H, W)`` to trace with; with `dynamic_batch` the file accepts any N.

    Raises:
        OnnxExportError: the export failed; the message names the first layer that does not export.
        MissingRuntimeError: the exporter's packages are not installed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu = copy.deepcopy(model).cpu().eval()
    x = torch.randn(*input_shape)
    try:
        _export(cpu, x, path, dynamic_batch)
    except MissingRuntimeError:
        raise
    except Exception as err:
        raise OnnxExportError(f"torch.onnx.export could not export {type(model).__name__}: "
                              f"{_failing_layer(cpu, x)}") from err
    _remember_export(model, input_shape[1:], path.resolve(), dynamic_batch)
    return path


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
        raise OnnxMismatchError(f"{path} is not a valid ONNX model ({type(err).__name__}: "
                                f"{str(err).splitlines()[0][:300]}); export it again with export_onnx") from err


def _openvino_run(path: Path, num_threads: int) -> Callable[[np.ndarray], np.ndarray]:
    ov = require("openvino")
    core = ov.Core()
    # float32 as in PyTorch: on CPUs with bfloat16 units OpenVINO would otherwise compute in bfloat16
    compiled = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": num_threads, "PERFORMANCE_HINT": "LATENCY",
                                                     "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    return lambda a: request.infer({0: a})[compiled.output(0)]


def runner(path: str | Path, runtime: str = "onnxruntime", *, num_threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """The file at `path` in `runtime` as a function of a float32 numpy batch, returning the output array."""
    if runtime == "onnxruntime":
        session = onnx_session(path, num_threads=num_threads)
        name = session.get_inputs()[0].name
        return lambda a: session.run(None, {name: a})[0]
    if runtime == "openvino":
        return _openvino_run(Path(path), num_threads)
    raise ValueError(f"unknown runtime {runtime!r}; choose one of {RUNTIMES}")


def check_onnx(path: str | Path, model: nn.Module, x: torch.Tensor, *, runtime: str = "onnxruntime",
               rtol: float = 1e-4, atol: float = 1e-5) -> float:
    """The largest absolute difference between the file's outputs and `model`'s on `x` (eval mode, CPU).

    Raises:
        OnnxMismatchError: some output differs by more than ``atol + rtol * |PyTorch's output|`` (or the
            file is not a valid ONNX model).
    """
    cpu = copy.deepcopy(model).cpu().eval()
    with torch.no_grad():
        want = cpu(x.cpu()).numpy()
    try:
        got = runner(path, runtime)(x.cpu().numpy().astype(np.float32))
    except OnnxMismatchError:
        raise
    except Exception as err:
        raise OnnxMismatchError(f"{path} does not run on a batch of shape {tuple(x.shape)} in {runtime} "
                                f"({type(err).__name__}: {str(err).splitlines()[0][:300]})") from err
    if got.shape != want.shape:
        raise OnnxMismatchError(f"{path} gives outputs of shape {got.shape}, the model {want.shape}: "
                                "it was exported from another model")
    diff = float(np.max(np.abs(got - want))) if want.size else 0.0
    if not np.allclose(got, want, rtol=rtol, atol=atol):
        raise OnnxMismatchError(f"{path}'s outputs differ from PyTorch's by up to {diff:.3g} (tolerance {atol:g} + "
                                f"{rtol:g} x |output|) in {runtime}: the file is broken or was exported from another "
                                "model, so it is not timed")
    return diff


_EXPORTED: dict[str, tuple[Path, tuple[int, int] | None]] = {}   # key -> (file, its mtime and size)
_RUNNERS: dict[tuple[str, str, int], Callable[[np.ndarray], np.ndarray]] = {}
_EXPORT_DIR: tempfile.TemporaryDirectory | None = None


def _key(model: nn.Module, image_shape: Sequence[int]) -> str:
    """Same architecture, weights and image shape, same key (so one export serves every timing of a model)."""
    return hashlib.sha256(f"{model!r}{tuple(image_shape)}{fingerprint(model)}".encode()).hexdigest()


def _signature(path: Path) -> tuple[int, int] | None:
    return (path.stat().st_mtime_ns, path.stat().st_size) if path.exists() else None


def _remember_export(model: nn.Module, image_shape: Sequence[int], path: Path, dynamic_batch: bool) -> None:
    """Let `checked_runner` time this file instead of exporting the same weights again, as long as the file
    is not changed on disk (written over by another export, edited, deleted)."""
    if dynamic_batch:
        _EXPORTED[_key(model, image_shape)] = (path, _signature(path))


def _exported(key: str) -> Path | None:
    """The file exported for `key`, if it is still exactly as it was written."""
    path, signature = _EXPORTED.get(key, (None, None))
    return path if path is not None and _signature(path) == signature else None


def checked_runner(model: nn.Module, x: torch.Tensor, runtime: str, *, num_threads: int = 1,
                   rtol: float = 1e-4, atol: float = 1e-5) -> Callable[[np.ndarray], np.ndarray]:
    """`model` exported to ONNX, its outputs checked against PyTorch's on `x` (`check_onnx`), as a `runner` of
    `runtime`.  Exported, checked and loaded once per process for the same weights, image shape, runtime and
    threads (in a temporary folder, or the file `export_onnx` last wrote for it), so timing a model again costs
    only the timing."""
    global _EXPORT_DIR
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {RUNTIMES}")
    key = _key(model, x.shape[1:])
    if (key, runtime, num_threads) in _RUNNERS and _exported(key):
        return _RUNNERS[key, runtime, num_threads]
    if not _exported(key):
        _EXPORT_DIR = _EXPORT_DIR or tempfile.TemporaryDirectory(prefix="pruning_onnx_")
        export_onnx(model, Path(_EXPORT_DIR.name) / f"{key[:16]}.onnx", (min(len(x), 2), *x.shape[1:]))   # remembered
    path = _exported(key)
    check_onnx(path, model, x[:8], runtime=runtime, rtol=rtol, atol=atol)
    _RUNNERS[key, runtime, num_threads] = runner(path, runtime, num_threads=num_threads)
    return _RUNNERS[key, runtime, num_threads]
