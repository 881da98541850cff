"""The registry of runtimes: every runtime `measure_latency` can time a model in (as ``form=``) is one `Runtime`
entry: its name, the packages it needs, and how it builds a runner (a function of a float32 numpy batch) from an
ONNX file or from the model, for a number of threads.  `available_runtimes` says which can run here and, if not,
what to install; `require` imports a package or says how to install it (`MissingRuntimeError`).
The runtimes themselves (ONNX Runtime, OpenVINO), the export and the output check are in `runtimes`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .deploy import FORMS

__all__ = ["EXPORT_PACKAGES", "RUNTIMES", "MissingRuntimeError", "OnnxExportError", "OnnxMismatchError",
           "OutputMismatchError", "Runner", "Runtime", "available_runtimes", "first_line", "get_runtime",
           "register_runtime", "require", "unregister_runtime"]

#: A runtime's model: a float32 numpy batch ``(N, C, H, W)`` in, the output array ``(N, ...)`` out.
Runner = Callable[[np.ndarray], np.ndarray]

#: What exporting to ONNX needs, for every runtime that loads an ONNX file.
EXPORT_PACKAGES = ("onnx", "onnxscript")
DEPLOY_EXTRA = 'pip install -e ".[deploy]" (or: pip install onnx onnxruntime onnxscript)'


class MissingRuntimeError(ImportError):
    """A package that exporting or timing needs is not installed; the message says how to install it."""


class OnnxExportError(RuntimeError):
    """``torch.onnx.export`` failed; the message names the first layer that does not export."""


class OutputMismatchError(ValueError):
    """A runtime's outputs differ from the PyTorch model's beyond the tolerance, so it is not timed."""


class OnnxMismatchError(OutputMismatchError):
    """An ONNX file's outputs differ from the PyTorch model's beyond the tolerance (or it is not a valid file)."""


def first_line(err: BaseException) -> str:
    """``"TypeName: first line of the message"`` (at most 300 characters of it), for an error that quotes another."""
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:300]}"


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Runtime:
    """One runtime `measure_latency` can time a model in, as ``form=name``.

    Give exactly one way to build its runner (a `Runner`, run on the CPU; torch's thread count is `num_threads`
    while it is timed):

    - `from_onnx(path, num_threads)`: from an ONNX file; the model is exported (`export_onnx`, which needs
      `EXPORT_PACKAGES`) and the loaded file's outputs checked against PyTorch's (`OnnxMismatchError`).
    - `from_model(model, example, num_threads)`: from a CPU copy of the model (eval mode) and an example CPU
      batch; the runner's outputs are checked against PyTorch's (`OutputMismatchError`).

    The runner is built once per weights, image shape, runtime and thread count, so it must accept any batch size.

    Attributes:
        name: the ``form`` that selects it; not one of the PyTorch forms (`deploy.FORMS`).
        packages: modules to import before it can run (besides `EXPORT_PACKAGES`), e.g. ``("onnxruntime",)``.
        install: how to install `packages` (said by `MissingRuntimeError`); default ``pip install <packages>``.
    """

    name: str
    packages: tuple[str, ...] = ()
    from_onnx: Callable[[Path, int], Runner] | None = None
    from_model: Callable[[nn.Module, torch.Tensor, int], Runner] | None = None
    install: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a runtime's name must be a non-empty string; got {self.name!r}")
        if (self.from_onnx is None) == (self.from_model is None):
            raise ValueError(f"runtime {self.name!r}: give exactly one of from_onnx (build from an ONNX file) "
                             "and from_model (build from the model)")

    @property
    def needs(self) -> tuple[str, ...]:
        """Every package it needs: the exporter's for a runtime that loads ONNX files, then its own."""
        return tuple(dict.fromkeys((*EXPORT_PACKAGES, *self.packages) if self.from_onnx else self.packages))


_REGISTRY: dict[str, Runtime] = {}


def register_runtime(runtime: Runtime, *, replace: bool = False) -> Runtime:
    """Make `runtime` a ``form`` of `measure_latency` (and `compare`, `side_by_side`, ...); returns it.

    Raises:
        ValueError: its name is a PyTorch form, or already registered (pass ``replace=True`` to replace it).
    """
    if runtime.name in FORMS:
        raise ValueError(f"runtime {runtime.name!r} has the name of a PyTorch form {FORMS}; choose another name")
    if runtime.name in _REGISTRY and not replace:
        raise ValueError(f"runtime {runtime.name!r} is already registered; pass replace=True to replace it")
    _REGISTRY[runtime.name] = runtime
    return runtime


def unregister_runtime(name: str) -> Runtime:
    """Remove the runtime `name` from the registry (a notebook that tried one, a test); returns it."""
    return _REGISTRY.pop(get_runtime(name).name)


def get_runtime(name: str) -> Runtime:
    """The registered runtime `name`, or a ``ValueError`` that names the registered ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown runtime {name!r}; choose one of {tuple(_REGISTRY)}")
    return _REGISTRY[name]


class _RegisteredNames(Sequence):
    """The names of the registered runtimes, read when used (so a runtime registered later is in it)."""

    def __getitem__(self, index: Any) -> Any:
        return tuple(_REGISTRY)[index]

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(_REGISTRY))

    def __add__(self, other: Sequence[str]) -> tuple[str, ...]:
        return tuple(self) + tuple(other)

    def __radd__(self, other: Sequence[str]) -> tuple[str, ...]:
        return tuple(other) + tuple(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (tuple, list, _RegisteredNames)) and tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))


#: Runtimes other than PyTorch that `measure_latency` can time (as ``form=``): the registry's names, a sequence
#: that ``FORMS + RUNTIMES`` turns into a tuple.
RUNTIMES = _RegisteredNames()


def _install_hint(package: str) -> str:
    if package in EXPORT_PACKAGES:
        return DEPLOY_EXTRA
    hints = [r.install for r in _REGISTRY.values() if package in r.packages and r.install]
    return hints[0] if hints else f"pip install {package}"


def require(package: str) -> Any:
    """Import `package` (``onnx``, ``onnxruntime``, ``onnxscript``, ``openvino``, ...) or say how to install it."""
    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise MissingRuntimeError(f"{package} is not installed ({err}); install it with: "
                                  f"{_install_hint(package)}") from err


def available_runtimes() -> dict[str, str | None]:
    """``{runtime: None}`` when it can be used here, else the reason it cannot (for a notebook to print)."""
    out: dict[str, str | None] = {}
    for name, entry in _REGISTRY.items():
        try:
            for package in entry.needs:
                require(package)
            out[name] = None
        except MissingRuntimeError as err:
            out[name] = str(err)
    return out
