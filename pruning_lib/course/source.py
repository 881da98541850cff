"""The quick profile's source network ("ImageNet"): a small VGG pretrained by our own code.

Transfer learning needs a network that learned general features from much more data than the
target task has.  Ours learns the 8 source classes of Fashion-MNIST (everything but T-shirt/top and
Shirt) from all 48,000 of their official training images, read from Debian's
``dataset-fashion-mnist`` package, with flips and small shifts.  Only the resulting checkpoint is
committed (``data/pretrained/small_vgg_fashion8.pt``); the notebooks never need the full dataset.

Regenerate it with ``python -m pruning_lib.course.source`` (about 10 minutes on one CPU core); the small
ResNet's (``data/pretrained/small_resnet_fashion8.pt``, for notebook 05) with ``--arch small_resnet``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .. import data, models
from ..recover import train
from ..checkpoints import save_checkpoint
from ..models.resnets import small_resnet
from ..runtime import num_threads, seed_everything
from .datasets import SOURCE_CLASSES
from .paths import REPO_ROOT

__all__ = ["ARCHITECTURES", "SOURCE_CHECKPOINT", "SOURCE_CHECKPOINTS", "Augmented", "pretrain_source"]

SOURCE_CHECKPOINT = REPO_ROOT / "data" / "pretrained" / "small_vgg_fashion8.pt"
#: The source network of each quick-profile architecture (notebook 05 prunes the ResNet).
SOURCE_CHECKPOINTS = {"small_vgg": SOURCE_CHECKPOINT, "small_resnet": REPO_ROOT / "data" / "pretrained" / "small_resnet_fashion8.pt"}
ARCHITECTURES = {"small_vgg": models.small_vgg, "small_resnet": small_resnet}


class Augmented:
    """A loader whose batches are flipped left-right (each image with probability 1/2) and shifted by up
    to `shift` pixels (the whole batch, padding with the background value), from a seeded generator."""

    def __init__(self, loader, *, shift: int = 2, seed: int = 0) -> None:
        self.loader, self.shift = loader, shift
        self.generator = torch.Generator().manual_seed(seed)
        self.background = (0.0 - data.FASHION_MEAN) / data.FASHION_STD   # a black pixel, normalised

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            flip = torch.rand(len(x), generator=self.generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            s = self.shift
            padded = F.pad(x, (s, s, s, s), value=self.background)
            i, j = torch.randint(0, 2 * s + 1, (2,), generator=self.generator).tolist()
            yield padded[:, :, i:i + x.shape[2], j:j + x.shape[3]], y


def pretrain_source(steps: int = 3000, *, seed: int = 0, batch_size: int = 128, max_lr: float = 2e-3,
                    arch: str = "small_vgg", progress: bool = True) -> tuple[nn.Module, pd.DataFrame]:
    """Train the small VGG on the 8 source classes (48,000 images), evaluated on their 8,000 official test images.

    Adam with a one-cycle learning rate (up to `max_lr`), `steps` steps of `batch_size`, flips and shifts.
    Returns the model (eval mode) and fit's history.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    seed_everything(seed)
    model = ARCHITECTURES[arch](num_classes=len(SOURCE_CLASSES))
    train_set = data.fashion_mnist_full("train", SOURCE_CLASSES)
    test_set = data.fashion_mnist_full("test", SOURCE_CLASSES)
    loader = Augmented(data.make_loader(train_set, batch_size, shuffle=True, seed=seed), seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=max_lr / 2)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=steps, pct_start=0.15)
    history = train.fit(model, loader, steps=steps, optimizer=optimizer, eval_every=500,
                        val_loader=data.make_loader(test_set, 1000, shuffle=False),
                        callbacks=[train.FunctionCallback(on_step=lambda *_: schedule.step())], progress=progress)
    return model.eval(), history


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Regenerate the quick profile's pretrained source network.")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the committed file: 1)")
    parser.add_argument("--arch", default="small_vgg", choices=sorted(ARCHITECTURES))
    parser.add_argument("--out", default=None, help="default: the committed file of --arch")
    args = parser.parse_args(argv)
    args.out = args.out or str(SOURCE_CHECKPOINTS[args.arch])
    with num_threads(args.threads):
        model, history = pretrain_source(args.steps, seed=args.seed, arch=args.arch)
    save_checkpoint(args.out, model, history=history,
                    meta={"arch": args.arch, "classes": list(SOURCE_CLASSES), "steps": args.steps, "seed": args.seed,
                          "threads": args.threads, "data": "Debian dataset-fashion-mnist, 48,000 source-class images"})
    print(history.tail(3).to_string(index=False))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
