"""torchvision's VGG16 with ImageNet weights: downloaded through the weights API, or from a local file.

Offline, the download fails with `WeightsUnavailableError`, whose message gives the URL and where to
put the file; a local file is read with ``torch.load(weights_only=True)`` and its keys checked.
"""

from __future__ import annotations

from pathlib import Path

import torchvision

from .small import check_positive_int, replace_head
from .pretrained import WeightsUnavailableError, check_keys, hub_path, load_weights

__all__ = ["VGG16_URL", "VGG16_WEIGHTS", "WeightsUnavailableError", "hub_weights_path", "vgg16"]

VGG16_WEIGHTS = torchvision.models.VGG16_Weights.IMAGENET1K_V1
#: Where torchvision downloads the ImageNet VGG16 weights from.
VGG16_URL = VGG16_WEIGHTS.url


def hub_weights_path() -> Path:
    """Where torch hub keeps (or will keep) the downloaded ImageNet VGG16 weights file."""
    return hub_path(VGG16_WEIGHTS)


def vgg16(
    weights: str | Path | None = "imagenet", *, num_classes: int = 2, progress: bool = True
) -> torchvision.models.VGG:
    """torchvision's VGG16 (no BN; 13 convs in ``features``), with a ``num_classes`` head.

    Args:
        weights: ``"imagenet"`` downloads ``VGG16_Weights.IMAGENET1K_V1`` through torchvision
            (cached under ``torch.hub.get_dir()``); a path loads a local state dict
            (``torch.load(path, weights_only=True)``); ``None`` gives random init (for timing).
        num_classes: outputs of the new last classifier layer (2 for Dogs vs Cats). The head is
            replaced unless it already has this many outputs (e.g. 1000 keeps ImageNet's head).
        progress: show torchvision's download progress bar.

    Raises:
        WeightsUnavailableError: the ImageNet download failed; the message gives the URL and fix.
        FileNotFoundError: ``weights`` is a path that does not exist.
        ValueError: the file is not a VGG16 state dict.
    """
    check_positive_int("num_classes", num_classes)
    if weights is None:
        model = torchvision.models.vgg16(weights=None)
    else:
        state, source = load_weights(weights, VGG16_WEIGHTS, "VGG16", progress=progress)
        head = state.get("classifier.6.weight")
        model = torchvision.models.vgg16(weights=None, init_weights=False,
                                         num_classes=head.shape[0] if getattr(head, "ndim", 0) == 2 else 1000)
        check_keys(model, state, source, "VGG16", VGG16_URL)
        model.load_state_dict(state)
    if model.classifier[-1].out_features != num_classes:
        replace_head(model, num_classes)
    return model
