"""ImageNet weights of torchvision models: downloaded through the weights API, or read from a local file.

Offline, a download fails with `WeightsUnavailableError`, whose message gives the URL and where to put
the file; a local file is read with ``torch.load(weights_only=True)`` and its keys checked against the
model, so a wrong file is named before anything is loaded.  `vgg16` (the post's network) and
`resnets.torchvision_resnet` (notebook 05's full profile) load their weights here.
"""

from __future__ import annotations

import http.client
import socket
import urllib.error
from pathlib import Path

import torch
from torch import nn
from torchvision.models import WeightsEnum

from ..checkpoints import state_dict_differences

__all__ = ["WeightsUnavailableError", "hub_path", "imagenet_state_dict", "load_weights", "local_state_dict"]


class WeightsUnavailableError(RuntimeError):
    """The pretrained weights could not be downloaded (e.g. no network)."""


#: What a failed download raises: URLError/HTTPError, socket errors and timeouts (all OSError),
#: and a connection that drops mid-transfer.
_DOWNLOAD_ERRORS = (urllib.error.URLError, OSError, socket.timeout, http.client.HTTPException)


def hub_path(weights: WeightsEnum) -> Path:
    """Where torch hub keeps (or will keep) the downloaded file of `weights`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def imagenet_state_dict(weights: WeightsEnum, name: str, *, progress: bool = True) -> dict[str, torch.Tensor]:
    """Download (or read from the torch hub cache) the state dict of `weights`; `name` ("VGG16") for messages."""
    try:
        return weights.get_state_dict(progress=progress, check_hash=True)
    except _DOWNLOAD_ERRORS as err:
        cause = f"{type(err).__name__}: {err}"
    except RuntimeError as err:  # torch.hub's "invalid hash value": a truncated download
        if "hash" not in str(err):
            raise
        cause = f"corrupted download ({err})"
    raise WeightsUnavailableError(
        f"Downloading the ImageNet {name} weights failed ({cause}).\n"
        f"URL: {weights.url}\n"
        f"Fix: download that file on a machine with internet and pass its path, "
        f"{name.lower()}(weights='path/to/{Path(weights.url).name}'), or put it in torch hub's "
        f"checkpoints folder: {Path(torch.hub.get_dir()) / 'checkpoints'}"
    )


def local_state_dict(path: Path, name: str, url: str) -> dict[str, torch.Tensor]:
    """A state dict saved with ``torch.save`` (tensors only, ``weights_only=True``); `url` is the file to get."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{name} weights file not found: {path.resolve()}\n"
            f"Fix: check the path, or download {url} and pass its path "
            f"(or use weights='imagenet' with internet, weights=None for random init)."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a {name} state dict (expected a dict of tensors such as the file at {url}); "
                         f"got {type(state).__name__}")
    return state


def load_weights(weights: str | Path, enum: WeightsEnum, name: str, *, progress: bool = True) -> tuple[dict, str]:
    """``(state dict, where it came from)``: ``"imagenet"`` downloads `enum`, anything else is a local file."""
    if isinstance(weights, str) and weights.lower() == "imagenet":
        return imagenet_state_dict(enum, name, progress=progress), "the ImageNet download"
    return local_state_dict(Path(weights), name, enum.url), str(weights)


def check_keys(model: nn.Module, state: dict[str, torch.Tensor], source: str, name: str, url: str) -> None:
    """Raise ValueError naming the missing and unexpected keys and the shape mismatches."""
    differences = state_dict_differences(model, state, "file")
    if differences:
        raise ValueError(f"{source} is not a {name} state dict: " + "; ".join(differences) + ". "
                         f"Fix: pass the torchvision file {url}")
