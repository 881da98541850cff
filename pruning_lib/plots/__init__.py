"""Plots: each ``plot_*`` returns its matplotlib Figure (titles, labelled axes, legends); ``draw_*`` draw on an axis.

- `basics`: examples of each class, a training history, a confusion matrix (notebook 01); `figure_png`.
- `ranking`: score distributions, criteria against the oracle, one-shot sweeps (notebook 02).
- `iterative`: the Prune–Train–Repeat sawtooth, criteria compared, filters left per layer (notebook 03).
- `speed`: speedup against FLOPs, where the time goes, one conv's width staircase (notebook 04).
- `groups`: a network's channel groups, which convs write and read each one (notebook 05).
- `layout`: what the others share: log ticks as plain numbers, point labels placed where they collide with nothing.
"""
