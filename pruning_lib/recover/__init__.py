"""Recover: fine-tuning (`train`, `evaluation`, `distill`), Prune–Train–Repeat (`iterative`), one shot and its
recovery (`oneshot`, `recovery`), and reading a run's history (`history`)."""
