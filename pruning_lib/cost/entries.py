"""Measured entries: the time of each block signature, measured alone on this machine and kept on disk.

An entry is one block (`blocks`) at one set of sizes, timed alone in the form or runtime the network will run in
(PyTorch's deploy form: BatchNorm folded, channels-last tensors; or a registered runtime such as ONNX Runtime,
the block exported to ONNX), with its inputs already in the layout they have inside the network.  Entries are
measured in the one timing harness (`measure.harness.interleaved`: warm-up, rounds in a random order, medians),
a batch of entries at a time, and only when a plan needs them.

A machine's speed drifts over minutes (memory fragments, caches and clocks change): the same blocks timed in two
batches minutes apart differ by several percent, most for large memory-bound tensors.  So the entries to measure
are shuffled (no width pattern's entries all in one batch), and one reference block, the first entry a store
measures, is timed again in every batch: each batch's entries are divided by how much slower the reference ran
there than the first time.

They are kept in one JSON file per *bucket*: the form, the thread count, the machine (CPU model and count), the
torch version and the runtime's versions.  Within it an entry's key is a hash of its signature, so every network
and every iteration on this machine shares them: ResNet-18's repeated blocks are measured once, a second run
reads them back.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np
import torch
import torch.nn as nn

from .. import runtime
from ..checkpoints import atomic_write
from ..measure.deploy import FORMS, deployment_parts
from ..measure.harness import interleaved, summarise
from ..measure.machine import machine_info
from ..measure.runtimes import RUNTIMES, checked_runner, get_runtime
from .blocks import with_one_input

__all__ = ["Entry", "EntryStore", "cache_dir"]

#: the harness per batch of entries: rounds, and the time each entry should run per round (its calls adapt)
ROUNDS, ROUND_MS, MAX_CALLS, CHUNK = 5, 4.0, 25, 64
#: the block timed in every chunk besides the chunk's own, to correct the chunks for the machine's drift
REFERENCE = "(reference block)"


def cache_dir() -> Path:
    """Where entries are kept: ``$PRUNING_CACHE_DIR``, else ``~/.cache/pruning_lib``."""
    return Path(os.environ.get("PRUNING_CACHE_DIR", Path.home() / ".cache" / "pruning_lib")).expanduser()


@dataclass(frozen=True)
class Entry:
    """One block's time: ``ms`` (the median of its round medians) and ``noise_ms`` (their spread)."""

    ms: float
    noise_ms: float


def _versions(form: str) -> dict[str, str]:
    if form not in RUNTIMES:
        return {}
    out = {}
    for package in get_runtime(form).packages:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[package] = importlib.metadata.version(package)
    return out


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` + ``.lock`` while the store is read and written (two lanes of make demo)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:                                  # pragma: no cover - Windows: last writer wins
        yield
        return
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class EntryStore:
    """The entries of one bucket (form, threads, machine, versions), read from and written to `cache_dir`.

    Args:
        form: a PyTorch form of `measure.FORMS` ("deploy") or a registered runtime ("onnxruntime", ...).
        num_threads: threads while timing (as the network will run).
        cache: read and write the file; False keeps the entries in memory only.
    """

    def __init__(self, form: str = "deploy", num_threads: int = 1, *, cache: bool = True) -> None:
        if form not in FORMS + RUNTIMES:
            raise ValueError(f"unknown form {form!r}; choose one of {FORMS + RUNTIMES}")
        info = machine_info()
        self.form, self.num_threads, self.cache = form, num_threads, cache
        self.bucket = {"form": form, "num_threads": num_threads, "processor": info["processor"],
                       "cpus": info["cpu_count"], "torch": info["torch"], "versions": _versions(form)}
        self.path = cache_dir() / f"latency-entries-{_key(json.dumps(self.bucket, sort_keys=True))}.json"
        self.entries: dict[str, Entry] = {}
        self.measured = 0                         # entries this store measured (not read back)
        self.seconds = 0.0                        # time spent measuring them
        self._reference: tuple[str, Callable] | None = None     # timed in every chunk: the machine's drift
        self._reference_ms = 0.0
        self._read()

    def _read(self) -> None:
        if self.cache and self.path.is_file():
            with contextlib.suppress(ValueError, KeyError, TypeError, OSError):
                stored = json.loads(self.path.read_text())["entries"]
                self.entries.update({k: Entry(**v) for k, v in stored.items()})

    def _write(self, new: Mapping[str, Entry]) -> None:
        self.entries.update(new)
        if not self.cache:
            return
        with _locked(self.path):
            self._read()                          # what another process added meanwhile
            self.entries.update(new)
            payload = {"bucket": self.bucket,
                       "entries": {k: {"ms": e.ms, "noise_ms": e.noise_ms} for k, e in self.entries.items()}}
            atomic_write(self.path, lambda f: f.write(json.dumps(payload).encode()))

    def get(self, signature: str) -> Entry | None:
        return self.entries.get(_key(signature))

    def __contains__(self, signature: str) -> bool:
        return _key(signature) in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    # ---------------------------------------------------------------- measuring
    def _runner(self, body: nn.Module, shapes: list[tuple[int, ...]], pool: torch.Tensor) -> Callable[[], object]:
        """One call of a block (`blocks.build`: a module of its inputs, their shapes) on views of `pool`, in the
        form's layout: one after the other in the pool, so no two inputs share memory and no input is allocated."""
        views, offset = [], 0
        for shape in shapes:
            n = int(np.prod(shape))
            views.append(pool[offset:offset + n])
            offset += n
        if self.form in RUNTIMES:                   # a runtime exports one input: the others become buffers
            module = with_one_input(body, shapes)
            x = views[0].view(shapes[0])
            run = checked_runner(module, x, self.form, num_threads=self.num_threads, exporter="torchscript",
                                 fixed_batch=True)
            batch = x.numpy()
            return lambda: run(batch)
        deployed, memory_format = deployment_parts(body, self.form)
        inputs = []
        for view, shape in zip(views, shapes):
            if memory_format == torch.channels_last and len(shape) == 4:
                n, c, h, w = shape
                inputs.append(view.view(n, h, w, c).permute(0, 3, 1, 2))      # channels-last, no copy
            else:
                inputs.append(view.view(shape))
        return lambda: deployed(*inputs)

    def measure(self, pending: Mapping[str, Callable[[], tuple[nn.Module, list[tuple[int, ...]]]]], *,
                progress: bool = False) -> None:
        """Measure the entries `pending` names (signature -> a builder of the block and its inputs' shapes) that
        the store lacks, in the interleaved harness (all at once in a PyTorch form; a runtime's sessions, which hold
        their other inputs as constants, `CHUNK` at a time), and keep them."""
        todo = {s: b for s, b in pending.items() if s not in self}
        if not todo:
            return
        start = time.perf_counter()
        items = list(todo.items())
        random.Random(len(items)).shuffle(items)          # no pattern's entries all in one (slower) chunk
        if self._reference is None:
            self._reference = items[0]
        chunk = CHUNK if self.form in RUNTIMES else len(items)
        for i in range(0, len(items), chunk):
            built = {s: build() for s, build in items[i:i + chunk]}
            built[REFERENCE] = self._reference[1]()
            timed = self.time_blocks(built, seed=i, progress=progress)
            here = timed.pop(REFERENCE).ms
            self._reference_ms = self._reference_ms or here
            drift = here / self._reference_ms if self._reference_ms > 0 else 1.0
            self._write({_key(s): Entry(e.ms / drift, e.noise_ms / drift) for s, e in timed.items()})
            self.measured += len(built) - 1
        self.seconds += time.perf_counter() - start

    def time_blocks(self, built: Mapping[str, tuple[nn.Module, list[tuple[int, ...]]]], *, seed: int = 0,
                    progress: bool = False) -> dict[str, Entry]:
        """Time blocks ``{signature: (module of its inputs, their shapes)}`` in one interleaved harness: each runs
        about `ROUND_MS` per round (its calls adapt to its time), `ROUNDS` rounds."""
        with runtime.num_threads(self.num_threads), torch.no_grad():
            size = max(sum(int(np.prod(s)) for s in shapes) for _, shapes in built.values())
            pools: dict[torch.dtype, torch.Tensor] = {}

            def pool_of(module: nn.Module) -> torch.Tensor:
                dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
                return pools.setdefault(dtype, torch.randn(size, dtype=dtype))

            runners = {s: self._runner(body, shapes, pool_of(body)) for s, (body, shapes) in built.items()}
            calls = {}
            for s, run in runners.items():                      # warm-up, and the calls per round
                run()
                t0 = time.perf_counter()
                run()
                once = 1e3 * (time.perf_counter() - t0)
                calls[s] = int(min(MAX_CALLS, max(1, round(ROUND_MS / max(once, 1e-3)))))
            timed = summarise(interleaved(runners, rounds=ROUNDS, calls=calls, seed=seed, progress=progress,
                                          desc="latency entries"))
        return {s: Entry(t["ms"], t["noise_ms"]) for s, t in timed.items()}
