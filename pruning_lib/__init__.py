"""pruning_lib: structured (whole-filter) pruning of CNNs, as taught in the notebooks."""
