"""The no-library rule: a student's function may not hand its job to pruning_lib.

Every checker compares the student's function with the library's own answer, so a function that only calls the
library would pass without teaching anything.  While the student's function runs (and only then: the checker's
own reference is computed outside), a profiler (`sys.setprofile`) watches every Python call: the first call that
enters pruning_lib's code from outside it is the library function the student called, however it was imported
(``criteria.rank_filters`` or ``from pruning_lib.rank.criteria import rank_filters`` alike).  Not counted:

- the checkers' own code (``pruning_lib/exercises/``: the little models they build);
- a model running (the ``forward`` of an ``nn.Module``: the network the checker gave is the input, not a helper);
- calls the library makes inside itself, directly or through `contextlib`, a generator or a callback (only the
  call that entered it names what the student used);
- the modules an exercise allows (`without_library`'s ``allowed``: the loop's pieces in Prune–Train–Repeat).

The student's function is stopped at that call (an exception from the profiler, which Python then unsets: no need
to run the library's job to know the verdict); the previous profiler is restored when the function returns or raises.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from torch import nn

from ._verdict import Wrong

__all__ = ["without_library"]

_PACKAGE = Path(__file__).resolve().parent.parent       # pruning_lib/
_CHECKERS = Path(__file__).resolve().parent             # pruning_lib/exercises/


@functools.lru_cache(maxsize=4096)
def _library_module(filename: str) -> str | None:
    """The dotted name of the pruning_lib module in `filename` (``"pruning_lib.rank.criteria"``), or None when the
    file is not pruning_lib's or is one of the checkers' own."""
    try:
        path = Path(filename).resolve()
    except (OSError, ValueError):          # "<string>", "<frozen ...>"
        return None
    if not path.is_relative_to(_PACKAGE) or path.is_relative_to(_CHECKERS) or path.suffix != ".py":
        return None
    parts = path.relative_to(_PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_allowed(module: str, allowed: Sequence[str]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allowed)


class _Delegated(Exception):
    """Raised from the profiler at the first library call, to stop the student's function there (Python then unsets
    the profiler; `without_library` restores the previous one)."""


class _Watcher:
    """A profile function that remembers the first library function entered from outside the library."""

    def __init__(self, allowed: Sequence[str], top: FrameType) -> None:
        self.allowed = tuple(allowed)
        self.top = top                          # the frame that calls the student's function
        self.called: str | None = None          # "pruning_lib.rank.criteria.rank_filters"

    def _inside_library(self, frame: FrameType) -> bool:
        """Whether a library frame is among `frame`'s callers below `top` (then the library called it, through
        `contextlib`, a generator or a callback of its own)."""
        caller = frame.f_back
        while caller is not None and caller is not self.top:
            if _library_module(caller.f_code.co_filename) is not None:
                return True
            caller = caller.f_back
        return False

    def __call__(self, frame: FrameType, event: str, arg: object) -> None:
        if event != "call" or self.called is not None:
            return
        code = frame.f_code
        module = _library_module(code.co_filename)
        if module is None or code.co_name == "<module>" or _is_allowed(module, self.allowed):
            return
        if self._inside_library(frame):
            return                              # the call that entered the library is what counts
        if code.co_name == "forward" and isinstance(frame.f_locals.get("self"), nn.Module):
            return                              # a model running, not a helper doing the job
        name = code.co_qualname.removesuffix(".__post_init__").removesuffix(".__init__")
        self.called = f"{module}.{name}"
        raise _Delegated(self.called)           # no need to run the library's job: the verdict is known


def _refusal(called: str, allowed: Sequence[str], job: str) -> Wrong:
    if allowed:
        return Wrong(f"your function calls {called}; this exercise asks you to write {job} yourself "
                     f"(from pruning_lib, only its pieces: {', '.join(allowed)})")
    return Wrong(f"your function calls {called}; this exercise asks you to write {job} yourself, without pruning_lib "
                 "(the check compares with the library's own answer)")


def without_library(student: Callable, *, allowed: Sequence[str] = (), job: str = "it") -> Callable:
    """`student`, watched while it runs: once it returns (or raises), a call it made into pruning_lib outside the
    `allowed` modules (dotted names, e.g. ``"pruning_lib.rank"``) raises `Wrong` naming the function called and
    saying the exercise asks the student to write `job` themselves."""
    @functools.wraps(student)
    def watched(*args, **kwargs):
        watcher, previous = _Watcher(allowed, sys._getframe()), sys.getprofile()
        sys.setprofile(watcher)
        try:
            result = student(*args, **kwargs)
        except Exception:
            if watcher.called is None:
                raise
            result = None
        finally:
            sys.setprofile(previous)
        if watcher.called is not None:
            raise _refusal(watcher.called, allowed, job)
        return result
    return watched
