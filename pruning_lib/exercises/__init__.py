"""Exercises that check themselves: one checker per exercise of the notebooks.

A checker calls the student's function on several inputs built here (fixed seeds, tiny models), compares
with the library's answer, prints one line (passed, or the first thing that differs with a hint) and returns
a boolean a teacher can collect.  It never shows a solution; those are in ``notebooks/solutions/``.

- 01: `check_conv_cost` (parameters and FLOPs of a conv, by formula), `check_standard_error`
- 02: `check_l1`, `check_taylor` (forward and backward hooks), `check_spearman`
- 03: `check_remove_filter`, `check_remove_last_filter` (surgery by hand), `check_prune_train_repeat`
- 04: `check_latency` (warm-up, repeats, median), `check_fold_batchnorm`
- 05: `check_channel_groups`, `check_group_readers`
"""

from .cost import check_conv_cost, check_fold_batchnorm, check_latency, check_standard_error
from .ranking import check_l1, check_spearman, check_taylor
from .surgery import (check_channel_groups, check_group_readers, check_prune_train_repeat, check_remove_filter,
                      check_remove_last_filter)

__all__ = ["check_channel_groups", "check_conv_cost", "check_fold_batchnorm", "check_group_readers", "check_l1",
           "check_latency", "check_prune_train_repeat", "check_remove_filter", "check_remove_last_filter",
           "check_spearman", "check_standard_error", "check_taylor"]
