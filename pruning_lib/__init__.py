"""pruning_lib: make CNNs fast and small by pruning whole filters (Molchanov et al. 2017).

The face: ``pruning_lib.prune(model, example_inputs, train_loader, val_loader, flops_reduction=2.0)`` (`api`).

The map, bottom to top in the order of the method; a module imports only from the layers below it:

Foundations
- `runtime`      device, seeds, train/eval mode and thread count, set and restored
- `checkpoints`  one atomic writer and one checkpoint format (weights_only loading), the weights' fingerprint
- `data`         datasets: embedded Fashion-MNIST, image folders (Kaggle), Oxford-IIIT Pet, CIFAR-10
- `distributed`  several processes under torchrun: all-reduce, broadcast, barrier, DDP, each rank's share of the data

Analyse (`graph`)
- `graph.trace`        the model's data flow (torch.fx), refusing wrappers; a failed trace names the line
- `graph.layer_types`  how each module type passes or slices channels: one registry for analysis and surgery
- `graph.functions`    what each function or method call does to channels
- `graph.groups`       channel groups: the channels that go together (a conv in a chain is a group of one producer)

Measure
- `measure`      parameters, FLOPs, size, latency, deployment forms, runtimes (a registry), comparisons

Rank (`rank`)
- `rank.criteria`  every criterion from one statistics pass on what the next layers read; one registry
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
- `cost.latency`   the latency model: the blocks' sum, calibrated by one end-to-end measurement
- `cost.budgets`   each cut planned for a speedup, a parameter and a FLOPs target at once
- `cost.validation` the model's predictions against end-to-end measurements; one layer's time surface

Networks (`models`): the small VGG, small and torchvision ResNets, VGG16, ImageNet weights

Recover (`recover`)
- `recover.train`, `recover.evaluation`, `recover.distill`  fine-tuning, evaluation, distillation
- `recover.iterative`   Prune–Train–Repeat with checkpoints and resume (`recover.processes`: on several processes)
- `recover.oneshot`, `recover.recovery`, `recover.history`  one-shot pruning, its recovery, a run's history

The face: `api`  ``prune(...)``

On top (the course and its user interface): `course`, `plots`, `widgets`, `exercises`
"""

from .api import prune

__all__ = ["prune"]
