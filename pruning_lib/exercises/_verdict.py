"""How every checker reports: one line, passed or the first thing that differs, and a boolean for the teacher.

Each verdict is also recorded (the last one per exercise, in this Python session: a notebook's kernel), so that a
notebook's last cell can show them all with `summary`.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import torch

__all__ = ["Wrong", "close", "summary", "verdict"]

#: The last verdict of each exercise checked in this session, {exercise: row}, in the order first checked.
_LAST: dict[str, dict[str, object]] = {}


class Wrong(Exception):
    """The first thing that differs from the expected answer, with a hint (never the solution's code)."""


def _judge(title: str, check: Callable[[], None]) -> bool:
    """Run `check`; print ``✓ title: passed`` or ``✗ title: <what differs>``; return whether it passed."""
    try:
        check()
    except NotImplementedError:
        print(f"… {title}: not done yet (the function still raises NotImplementedError)")
        return False
    except Wrong as wrong:
        print(f"✗ {title}: {wrong}")
        return False
    except Exception as err:  # the student's code failed: say how, not where in ours
        print(f"✗ {title}: your function raised {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        return False
    print(f"✓ {title}: passed")
    return True


def verdict(title: str, check: Callable[[], None], *, notebook: str, exercise: str) -> bool:
    """Run `check`; print ``✓ title: passed`` or ``✗ title: <what differs>``; record and return whether it passed.

    `exercise` is the name of the function the notebook's starter cell asks for (``"taylor_scores"``) and
    `notebook` its notebook's number (``"02"``): `summary` lists them.  A starter that still raises
    NotImplementedError is "not done yet", not an error; any other exception from the student's function is shown
    with its type and message.
    """
    passed = _judge(title, check)
    _LAST[exercise] = {"notebook": notebook, "exercise": exercise, "passed": passed}
    return passed


def summary() -> pd.DataFrame:
    """The last verdict of every exercise checked in this session (this notebook's kernel), one row each in the order
    they were first checked: ``notebook``, ``exercise`` (the function the starter asks for) and ``passed`` (a bool;
    False also for "not done yet").  Empty (with those columns) before any check ran.  Prints nothing."""
    return pd.DataFrame(list(_LAST.values()), columns=["notebook", "exercise", "passed"])


def close(got, want, *, rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    """Whether two tensors (or numbers) agree in shape and value."""
    got, want = torch.as_tensor(got, dtype=torch.float64), torch.as_tensor(want, dtype=torch.float64)
    return got.shape == want.shape and torch.allclose(got, want, rtol=rtol, atol=atol)
