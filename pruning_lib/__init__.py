"""pruning_lib: make CNNs fast and small by pruning whole filters (Molchanov et al. 2017).

The map, in the order of the method: criteria -> planning -> surgery -> fine-tuning -> measuring.

Ranking filters
- `criteria`     the criteria (Taylor, activations, APoZ, weight norms, random) from one pass over the data
- `oracle`       the true loss change per filter, and Table 1: Spearman ρ of each criterion against it
- `group_criteria`  the same criteria, and the oracle, for channel groups (residual networks, DenseNets, MobileNets)

Choosing what to remove
- `planning`     scores (or target widths) -> a plan ``{conv: [indices]}``; the FLOPs regularisation (per conv or group)

Removing it for real
- `couplings`    who reads each conv's output, from the model's data flow (torch.fx)
- `surgery`      slice one layer and its dependents; apply a whole plan atomically and exactly
- `groups`       channel groups: channels tied by residual additions, concatenation, depthwise convs (torch.fx)
- `group_surgery`  remove channels from their whole group, exactly (`surgery.prune_filters` hands such plans to it)
- `slicing`      what both surgeries share: index checks, refusals of unsliceable layers, slicing, swapping in

Recovering accuracy
- `train`        `fit` with callbacks (and `Plateau`, early stopping)
- `evaluation`   loss and accuracy, predictions, confusion matrix
- `distill`      the fine-tuning loss: cross-entropy, or distillation from the dense network
- `iterative`    Prune–Train–Repeat with checkpoints and resume
- `history`      reading a Prune–Train–Repeat history (widths per layer, runs at equal FLOPs)
- `oneshot`      remove a fraction at once and measure the damage (no fine-tuning)
- `recovery`     remove a fraction at once, then fine-tune and watch the recovery

Measuring
- `measure`      parameters, FLOPs, size, latency, deployment forms, comparisons (a subpackage)

Foundations
- `runtime`      device, seeds, train/eval mode and thread count, set and restored
- `checkpoints`  one atomic writer and one checkpoint format (weights_only loading)
- `models`       the small VGG, its initialisation, head and freezing, the from-scratch copy
- `resnets`      a small BN ResNet laid out like the small VGG, and torchvision's ResNet-18/50 in that layout
- `vgg16`        torchvision's VGG16 with ImageNet weights (download or local file)
- `pretrained`   ImageNet weights of torchvision models: download or local file, clear errors offline
- `data`         datasets: embedded Fashion-MNIST, image folders (Kaggle), Oxford-IIIT Pet, CIFAR-10

On top (the course and its user interface)
- `course`       profiles, the shared experiment, datasets per profile, reports/, `make demo`
- `plots`        the notebooks' figures (matplotlib)
- `widgets`      ipywidgets wired to the pure functions above (the only modules importing IPython)
"""
