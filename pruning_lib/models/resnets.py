"""A small residual network with BatchNorm, laid out like the small VGG (``features``, ``avgpool``, ``classifier``).

So `models.replace_head`, `models.freeze_features` and the course's fine-tuning treat it like the VGG, while
its residual additions tie channels together: every block of a stage writes into the same residual stream,
so the stage's stem or downsample conv and each block's last conv form one **channel group**
(`groups.channel_groups`), and each block's first conv is free on its own.  ``torch.fx`` traces it.

    stem: conv3x3 + BN + ReLU + 2x2 max-pool
    stage s (widths[s], blocks[s] basic blocks; stride 2 from the second stage, with a 1x1 conv + BN shortcut):
        block: relu(x + BN(conv3x3(relu(BN(conv3x3(x))))))
    global average pool, Linear head

`torchvision_resnet` puts torchvision's ResNet-18/50 (ImageNet weights, for the full profile) in the same
layout: ``features`` = stem + ``layer1..layer4``, then ``avgpool`` and ``classifier`` = ``fc``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

import torchvision

from .small import check_positive_int, init_weights, replace_head
from .pretrained import check_keys, load_weights

__all__ = ["BasicBlock", "SmallResNet", "TORCHVISION_RESNETS", "small_resnet", "torchvision_resnet"]

#: The torchvision ResNets of the full profile and their ImageNet weights.
TORCHVISION_RESNETS = {"resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
                       "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1}


def _conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 conv + BN, added to the input (through a 1x1 conv + BN when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.conv2 = _conv_bn(cin, cout, stride=stride), _conv_bn(cout, cout)
        self.relu = nn.ReLU()
        self.shortcut = _conv_bn(cin, cout, kernel=1, stride=stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.shortcut(x) + self.conv2(self.relu(self.conv1(x))))


class SmallResNet(nn.Module):
    """Built by :func:`small_resnet` (``config`` holds its arguments: ``small_resnet(**model.config)`` copies it)
    or by :func:`torchvision_resnet` (``config``: ``arch`` and ``num_classes``)."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential, config: dict) -> None:
        super().__init__()
        self.features, self.avgpool, self.classifier, self.config = features, nn.AdaptiveAvgPool2d((1, 1)), classifier, config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(N, in_channels, H, W)`` to logits ``(N, num_classes)``."""
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def small_resnet(widths: Sequence[int] = (32, 64, 128), blocks: Sequence[int] = (2, 2, 2), *, in_channels: int = 1,
                 num_classes: int = 10) -> SmallResNet:
    """A small BN ResNet: a stem, ``len(widths)`` stages of basic blocks, global average pooling, a Linear head.

    The default (widths 32-64-128, two blocks per stage) has about 0.69 M parameters and 40 MFLOPs per 28x28
    image (stages at 14x14, 7x7 and 4x4).
    Weights use torchvision's VGG init (`models.init_weights`); seed with ``torch.manual_seed`` first.
    """
    if len(widths) != len(blocks) or not widths or any(int(w) < 1 for w in widths) or any(int(b) < 1 for b in blocks):
        raise ValueError(f"widths {list(widths)} and blocks {list(blocks)} must be positive and of the same length")
    layers: list[nn.Module] = [_conv_bn(in_channels, widths[0]), nn.ReLU(), nn.MaxPool2d(2)]
    cin = widths[0]
    for s, (w, n) in enumerate(zip(widths, blocks)):
        stage = [BasicBlock(cin if i == 0 else w, w, stride=2 if s > 0 and i == 0 else 1) for i in range(n)]
        layers.append(nn.Sequential(*stage))
        cin = w
    model = SmallResNet(nn.Sequential(*layers), nn.Sequential(nn.Linear(cin, num_classes)),
                        {"widths": [int(w) for w in widths], "blocks": [int(b) for b in blocks],
                         "in_channels": int(in_channels), "num_classes": int(num_classes)})
    init_weights(model)
    return model


def torchvision_resnet(arch: str = "resnet18", weights: str | Path | None = "imagenet", *, num_classes: int = 2,
                       progress: bool = True) -> SmallResNet:
    """torchvision's ResNet-18 or ResNet-50 in the small ResNet's layout (``features``, ``avgpool``, ``classifier``).

    Args:
        arch: ``"resnet18"`` or ``"resnet50"``.
        weights: ``"imagenet"`` downloads torchvision's ``IMAGENET1K_V1`` weights (cached under
            ``torch.hub.get_dir()``; offline: `pretrained.WeightsUnavailableError` with the URL and the fix);
            a path loads that file (a torchvision state dict, ``weights_only=True``); ``None``: random init.
        num_classes: outputs of the head (replaced, freshly initialised, unless the file's head has as many).
    """
    if arch not in TORCHVISION_RESNETS:
        raise ValueError(f"arch={arch!r}: choose one of {sorted(TORCHVISION_RESNETS)}")
    check_positive_int("num_classes", num_classes)
    build = getattr(torchvision.models, arch)
    if weights is None:
        net = build(weights=None, num_classes=num_classes)
    else:
        enum = TORCHVISION_RESNETS[arch]
        state, source = load_weights(weights, enum, arch, progress=progress)
        head = state.get("fc.weight")
        net = build(weights=None, num_classes=head.shape[0] if getattr(head, "ndim", 0) == 2 else 1000)
        check_keys(net, state, source, arch, enum.url)
        net.load_state_dict(state)
    features = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    model = SmallResNet(features, nn.Sequential(net.fc), {"arch": arch, "num_classes": net.fc.out_features})
    if net.fc.out_features != num_classes:
        replace_head(model, num_classes)
    return model
