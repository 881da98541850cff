"""Exercises that check themselves: one checker per exercise of the notebooks.

A checker calls the student's function on several inputs built here (fixed seeds, tiny models), compares
with the library's answer, prints one line (passed, or the first thing that differs with a hint) and returns
a boolean a teacher can collect; `summary()` gives the last verdict of every exercise checked in this session (a
notebook's last cell shows it).  It never shows a solution; those are in ``notebooks/solutions/``.

The no-library rule (`_guard`): while the student's function runs, a call into pruning_lib fails the check with
the name of the function called, since the check compares with that very function.  Only the Prune–Train–Repeat
exercise may use the library's pieces (`loop.PIECES`: ranking, plan, surgery, widths, fine-tuning, evaluation),
never a whole loop.  `docs/exercises.md` is the teacher's guide.

- 01: `check_conv_cost` (parameters and FLOPs of a conv, by formula), `check_standard_error`
- 02: `check_l1`, `check_taylor` (forward and backward hooks), `check_spearman`
- 03: `check_remove_filter`, `check_remove_last_filter` (surgery by hand), `check_prune_train_repeat`
- 04: `check_latency` (warm-up, repeats, median), `check_fold_batchnorm`
- 05: `check_channel_groups`, `check_group_readers`
"""

from ._verdict import summary
from .cost import check_conv_cost, check_fold_batchnorm, check_latency, check_standard_error
from .loop import check_prune_train_repeat
from .ranking import check_l1, check_spearman, check_taylor
from .surgery import check_channel_groups, check_group_readers, check_remove_filter, check_remove_last_filter

__all__ = ["check_channel_groups", "check_conv_cost", "check_fold_batchnorm", "check_group_readers", "check_l1",
           "check_latency", "check_prune_train_repeat", "check_remove_filter", "check_remove_last_filter",
           "check_spearman", "check_standard_error", "check_taylor", "summary"]
