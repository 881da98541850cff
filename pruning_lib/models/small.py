"""The networks we prune: a small VGG for quick lessons (and torchvision's VGG16, in `vgg16`).

Both share torchvision's VGG layout, so every pruning function treats them alike:

- ``model.features``: an ``nn.Sequential`` of ``Conv2d(3x3) [+ BatchNorm2d] + ReLU`` blocks and
  ``MaxPool2d(2)``; pruning removes whole filters (output channels) of these convolutions.
- ``model.avgpool``: an ``nn.AdaptiveAvgPool2d``.
- ``model.classifier``: an ``nn.Sequential`` whose last module is the ``nn.Linear`` head.

The forward pass is a plain chain (no residuals), so ``torch.fx.symbolic_trace`` can trace it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..surgery import widths_in, with_widths

__all__ = [
    "probe_chain",
    "DEFAULT_WIDTHS",
    "SmallVGG",
    "check_positive_int",
    "freeze_features",
    "init_weights",
    "first_linear",
    "replace_head",
    "scratch_model",
    "small_vgg",
]

#: Default ``small_vgg`` layout: filters per conv layer, ``"M"`` for a 2x2 max-pool.
DEFAULT_WIDTHS: tuple[int | str, ...] = (32, 32, "M", 64, 64, "M", 128, 128, "M", 256, "M")


# --------------------------------------------------------------------------- small VGG


class SmallVGG(nn.Module):
    """A VGG-style CNN laid out like torchvision's ``VGG`` (``features``, ``avgpool``, ``classifier``).

    Build it with :func:`small_vgg`. ``config`` holds the arguments it was built with (plain types),
    so ``small_vgg(**model.config)`` builds a fresh copy of the same architecture.
    """

    def __init__(
        self, features: nn.Sequential, classifier: nn.Sequential, config: dict[str, Any]
    ) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = classifier
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(N, in_channels, H, W)`` to logits ``(N, num_classes)``."""
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def _validate_widths(widths: Sequence[int | str]) -> list[int | str]:
    """Return ``widths`` as a list after checking each entry is a positive int or ``"M"``."""
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise TypeError(
            f"widths must be a sequence such as (32, 'M', 64, 'M'); got {widths!r}"
        )
    for i, w in enumerate(widths):
        is_int = isinstance(w, int) and not isinstance(w, bool)
        if not (w == "M" or (is_int and w > 0)):
            raise ValueError(
                f"widths[{i}] = {w!r}: each entry must be a positive int (filters in a conv layer) "
                f"or 'M' (a 2x2 max-pool)"
            )
    if not any(w != "M" for w in widths):
        raise ValueError(f"widths {list(widths)!r} has no conv layer; add at least one int")
    return list(widths)


def check_positive_int(name: str, value: Any) -> None:
    """Raise a ``ValueError`` naming `name` unless `value` is an int > 0 (not a bool): a width, a class count."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int; got {value!r}")


def _make_features(widths: list[int | str], in_channels: int, batch_norm: bool) -> nn.Sequential:
    """Conv(3x3, padding 1) [+ BN] + ReLU for each int, MaxPool2d(2) for each ``"M"``."""
    layers: list[nn.Module] = []
    channels = in_channels
    for w in widths:
        if w == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(channels, w, kernel_size=3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(w))
        layers.append(nn.ReLU(inplace=True))
        channels = w
    return nn.Sequential(*layers)


def _make_classifier(
    in_features: int, num_classes: int, hidden: int | None, dropout: float
) -> nn.Sequential:
    """``Linear`` head, or ``Linear -> ReLU -> Dropout -> Linear`` when ``hidden`` is set."""
    if hidden is None:
        return nn.Sequential(nn.Linear(in_features, num_classes))
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(p=dropout),
        nn.Linear(hidden, num_classes),
    )


def init_weights(model: nn.Module) -> None:
    """torchvision's VGG init, in place: Kaiming-normal convs (fan_out, ReLU), BN = identity with
    fresh running statistics, Linear N(0, 0.01). Seed with ``torch.manual_seed`` first."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            m.reset_running_stats()
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def small_vgg(
    widths: Sequence[int | str] = DEFAULT_WIDTHS,
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    batch_norm: bool = True,
    hidden: int | None = None,
    dropout: float = 0.0,
) -> SmallVGG:
    """Build a small VGG: 3x3 conv blocks and 2x2 max-pools, global average pool, linear head.

    Args:
        widths: filters per conv layer in order; ``"M"`` inserts ``MaxPool2d(2)``.
            The default has four pools, so 28x28 inputs reach 1x1 and 32x32 reach 2x2
            before the global average pool.
        in_channels: image channels (1 for grayscale, 3 for RGB).
        num_classes: outputs of the head (logits).
        batch_norm: add ``BatchNorm2d`` after each conv (the conv then has no bias).
        hidden: if set, the classifier is ``Linear(last, hidden) -> ReLU -> Dropout -> Linear``.
        dropout: dropout probability in the hidden classifier layer, in ``[0, 1)``.

    Returns:
        A :class:`SmallVGG` mapping ``(N, in_channels, H, W)`` to logits ``(N, num_classes)``,
        with H, W >= 1. Weights use torchvision's VGG init; seed with ``torch.manual_seed`` first.
    """
    widths = _validate_widths(widths)
    check_positive_int("in_channels", in_channels)
    check_positive_int("num_classes", num_classes)
    if hidden is not None:
        check_positive_int("hidden", hidden)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
    last_width = [w for w in widths if w != "M"][-1]
    config = {
        "widths": widths,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "batch_norm": bool(batch_norm),
        "hidden": hidden,
        "dropout": float(dropout),
    }
    model = SmallVGG(
        _make_features(widths, in_channels, batch_norm),
        _make_classifier(last_width, num_classes, hidden, dropout),
        config,
    )
    init_weights(model)
    return model


def scratch_model(pruned: nn.Module, template: nn.Module, *, seed: int = 0) -> nn.Module:
    """The pruned architecture with fresh random weights: "train the small network from scratch".

    Args:
        pruned: a model pruned from `template`'s architecture (only its widths are used).
        template: a freshly built, *unpruned* model of the same architecture (left unchanged).
        seed: for the initialisation.

    Returns a copy of `template` cut to `pruned`'s widths (`surgery.with_widths`), then
    re-initialised as torchvision's VGG is (`init_weights`), in train mode.
    """
    try:
        small = with_widths(template, widths_in(pruned.state_dict(), template))
    except ValueError as err:
        raise ValueError(f"the pruned model does not fit the template ({err}); pass a freshly built "
                         "unpruned model of the architecture that was pruned") from None
    torch.manual_seed(seed)
    init_weights(small)
    return small.train()


def first_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The first ``nn.Linear`` in `model` (module order) and its name: the layer that reads the last conv."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            return name, m
    raise ValueError(f"{type(model).__name__} has no nn.Linear layer")


# --------------------------------------------------------------------------- head and freezing


def _last_linear_index(model: nn.Module) -> int:
    classifier = getattr(model, "classifier", None)
    if not isinstance(classifier, nn.Sequential):
        raise TypeError(
            f"{type(model).__name__} has no nn.Sequential `classifier`; "
            "expected a VGG-style model (small_vgg or torchvision's vgg16)"
        )
    for i in reversed(range(len(classifier))):
        if isinstance(classifier[i], nn.Linear):
            return i
    raise TypeError(f"{type(model).__name__}.classifier has no nn.Linear layer to replace")


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Swap the last ``nn.Linear`` of ``model.classifier`` for a fresh one with ``num_classes`` outputs.

    The new layer keeps ``in_features``, dtype and device and gets PyTorch's default init
    (draws from the global RNG: seed first). Updates ``model.config`` when there is one.
    Returns the same ``model`` (modified in place).
    """
    check_positive_int("num_classes", num_classes)
    i = _last_linear_index(model)
    old: nn.Linear = model.classifier[i]
    model.classifier[i] = nn.Linear(
        old.in_features,
        num_classes,
        bias=old.bias is not None,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    if isinstance(getattr(model, "config", None), dict):
        model.config["num_classes"] = num_classes
    return model


def freeze_features(model: nn.Module, frozen: bool = True) -> nn.Module:
    """Set ``requires_grad = not frozen`` on every parameter of ``model.features``.

    Freeze the convolutional part to fine-tune only the classifier (first stage of the post);
    unfreeze before pruning, which needs gradients of the feature maps' filters.
    BatchNorm running statistics still update in train mode. Returns the same ``model``.
    """
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Module):
        raise TypeError(f"{type(model).__name__} has no `features` module to freeze")
    for p in features.parameters():
        p.requires_grad_(not frozen)
    return model


def probe_chain(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Module:
    """``1x1 conv (3 -> in_channels) -> ReLU -> conv (in -> out, kernel_size) -> BatchNorm -> ReLU -> 1x1 conv (-> 2)``:
    a network whose middle block is one conv block at every pair of widths its two groups can take (the latency
    model's surface of one layer, `cost.validation.layer_surface`)."""
    return nn.Sequential(nn.Conv2d(3, in_channels, 1), nn.ReLU(),
                         nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(), nn.Conv2d(out_channels, 2, 1))
