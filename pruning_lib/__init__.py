"""pruning_lib: make CNNs fast and small by pruning whole filters (Molchanov et al. 2017).

The face: ``pruning_lib.prune(model, example_inputs, train_loader, val_loader, speedup=3.0, params_reduction=4.0)``
(`api`).

The map, bottom to top in the order of the method; a module imports only from the layers below it:

Foundations
- `runtime`      device, seeds, train/eval mode, thread count and random state, set and restored; a model's inputs
                 (a tensor, a tuple or a dict)
- `checkpoints`  one atomic writer and one checkpoint format (weights_only loading), the weights' fingerprint
- `data`         datasets: embedded Fashion-MNIST, image folders (Kaggle), Oxford-IIIT Pet, CIFAR-10
- `distributed`  several processes under torchrun: all-reduce, broadcast, barrier, DDP, each rank's share of the data

Analyse (`graph`)
- `graph.trace`        the model's data flow (torch.fx), refusing wrappers; a failed trace names the line
- `graph.layer_types`  how each module type passes or slices channels: one registry for analysis, surgery, costs
                       and criteria (producers: convs 1d/2d/3d, transposed convs, Linear's hidden units)
- `graph.functions`    what each function or method call does to channels
- `graph.groups`       channel groups: the channels that go together (a conv in a chain is a group of one producer)

Measure
- `measure`      parameters, FLOPs, size, latency (one timing harness), deployment forms, runtimes (a registry),
                 comparisons

Rank (`rank`)
- `rank.stats`     one statistics pass: each group's maps (the end of its per-channel chain) and readers' inputs
- `rank.criteria`  every criterion as its paper defines it, from those sums; one registry, a criterion sees the group
- `rank.masking`   a group's channels zeroed where they are read (the reference surgery is exact to)
- `rank.oracle`    the true loss change per channel, and the paper's Table 1 (Spearman ρ)

Plan
- `plan`         scores (or target widths) -> a plan ``{conv: [indices]}``; the FLOPs cost of a channel

Remove
- `slicing`      indices checked, unsliceable layers refused, rows and columns sliced, tensors swapped in
- `surgery`      a plan applied to whole groups, atomically and exactly; `with_widths`, `load_pruned`

Cost (`cost`)
- `cost.network`   shapes, parameters and FLOPs of the network under any widths, exactly
- `cost.blocks`    the pieces its time is the sum of (a conv with its BatchNorm and activation, an addition, ...)
- `cost.entries`   each block's time at its sizes, measured alone on this machine and runtime, kept on disk
- `cost.latency`   the latency model: the blocks' sum, calibrated by end-to-end measurements
- `cost.budgets`   each cut planned for a speedup, a parameter and a FLOPs target at once
- `cost.validation` the model's predictions against end-to-end measurements; one layer's time surface

Networks (`models`): the small VGG, small and torchvision ResNets, VGG16, ImageNet weights

Recover (`recover`)
- `recover.train`, `recover.evaluation`, `recover.distill`  fine-tuning, evaluation, distillation
- `recover.schedule`, `recover.steps`, `recover.checkpointing`  what a run does, its named steps (rank, plan, cut,
  fine-tune, judge, record, save; one analysis per cut), its checkpoint
- `recover.iterative`   Prune–Train–Repeat with checkpoints and resume (`recover.processes`: on several processes)
- `recover.oneshot`, `recover.recovery`, `recover.history`  one-shot pruning, its recovery, a run's history

The face: `api`  ``prune(...)``, its arguments checked in the caller's words (`arguments`)

On top (the course and its user interface): `course`, `plots`, `widgets`, `exercises`
"""

from .api import prune

__all__ = ["prune"]
