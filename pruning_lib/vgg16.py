"""torchvision's VGG16 with ImageNet weights: downloaded through the weights API, or from a local file.

Offline, the download fails with `WeightsUnavailableError`, whose message gives the URL and where to
put the file; a local file is read with ``torch.load(weights_only=True)`` and its keys checked.
"""

from __future__ import annotations

import http.client
import socket
import urllib.error
from pathlib import Path

import torch
import torchvision
from torch import nn

from .checkpoints import state_dict_differences
from .models import _check_positive_int, replace_head

__all__ = ["VGG16_URL", "WeightsUnavailableError", "hub_weights_path", "vgg16"]

#: Where torchvision downloads the ImageNet VGG16 weights from.
VGG16_URL = torchvision.models.VGG16_Weights.IMAGENET1K_V1.url


def hub_weights_path() -> Path:
    """Where torch hub keeps (or will keep) the downloaded ImageNet VGG16 weights file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(VGG16_URL).name


class WeightsUnavailableError(RuntimeError):
    """The pretrained weights could not be downloaded (e.g. no network)."""


#: What a failed download raises: URLError/HTTPError, socket errors and timeouts (all OSError),
#: and a connection that drops mid-transfer.
_DOWNLOAD_ERRORS = (urllib.error.URLError, OSError, socket.timeout, http.client.HTTPException)


def _imagenet_state_dict(progress: bool) -> dict[str, torch.Tensor]:
    """Download (or read from the torch hub cache) the ImageNet VGG16 state dict."""
    weights = torchvision.models.VGG16_Weights.IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=progress, check_hash=True)
    except _DOWNLOAD_ERRORS as err:
        cause = f"{type(err).__name__}: {err}"
    except RuntimeError as err:  # torch.hub's "invalid hash value": a truncated download
        if "hash" not in str(err):
            raise
        cause = f"corrupted download ({err})"
    raise WeightsUnavailableError(
        f"Downloading the ImageNet VGG16 weights failed ({cause}).\n"
        f"URL: {weights.url}\n"
        f"Fix: download that file on a machine with internet and pass its path, "
        f"vgg16(weights='path/to/{Path(weights.url).name}'), or put it in torch hub's "
        f"checkpoints folder: {Path(torch.hub.get_dir()) / 'checkpoints'}"
    )


def _local_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a VGG16 state dict saved with ``torch.save`` (tensors only, ``weights_only=True``)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"VGG16 weights file not found: {path.resolve()}\n"
            f"Fix: check the path, or download "
            f"{torchvision.models.VGG16_Weights.IMAGENET1K_V1.url} and pass its path "
            f"(or use weights='imagenet' with internet, weights=None for random init)."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"{path} is not a VGG16 state dict (expected a dict of tensors such as the file at "
            f"{torchvision.models.VGG16_Weights.IMAGENET1K_V1.url}); got {type(state).__name__}"
        )
    return state


def _check_vgg16_keys(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise ValueError naming missing/unexpected keys and shape mismatches."""
    differences = state_dict_differences(model, state, "file")
    if differences:
        raise ValueError(
            f"{source} is not a VGG16 state dict: " + "; ".join(differences) + ". "
            f"Fix: pass the torchvision file {torchvision.models.VGG16_Weights.IMAGENET1K_V1.url}"
        )


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
    _check_positive_int("num_classes", num_classes)
    if weights is None:
        model = torchvision.models.vgg16(weights=None)
    else:
        if isinstance(weights, str) and weights.lower() == "imagenet":
            state, source = _imagenet_state_dict(progress), "the ImageNet download"
        else:
            state, source = _local_state_dict(Path(weights)), str(weights)
        head = state.get("classifier.6.weight")
        model = torchvision.models.vgg16(
            weights=None,
            init_weights=False,
            num_classes=head.shape[0] if isinstance(head, torch.Tensor) and head.ndim == 2 else 1000,
        )
        _check_vgg16_keys(model, state, source)
        model.load_state_dict(state)
    if model.classifier[-1].out_features != num_classes:
        replace_head(model, num_classes)
    return model
