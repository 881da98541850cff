"""How every checker reports: one line, passed or the first thing that differs, and a boolean for the teacher."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["Wrong", "close", "verdict"]


class Wrong(Exception):
    """The first thing that differs from the expected answer, with a hint (never the solution's code)."""


def verdict(title: str, check: Callable[[], None]) -> bool:
    """Run `check`; print ``✓ title: passed`` or ``✗ title: <what differs>``; return whether it passed.

    A starter that still raises NotImplementedError is "not done yet", not an error; any other exception
    from the student's function is shown with its type and message.
    """
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


def close(got, want, *, rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    """Whether two tensors (or numbers) agree in shape and value."""
    got, want = torch.as_tensor(got, dtype=torch.float64), torch.as_tensor(want, dtype=torch.float64)
    return got.shape == want.shape and torch.allclose(got, want, rtol=rtol, atol=atol)
