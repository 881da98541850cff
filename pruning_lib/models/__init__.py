"""Networks to prune: the small VGG (`small`), a small BN ResNet and torchvision's ResNets (`resnets`), VGG16
(`vgg16`), and ImageNet weights (`pretrained`).  The small VGG's functions are importable from here."""

from .small import (DEFAULT_WIDTHS, SmallVGG, check_positive_int, first_linear, freeze_features, init_weights, probe_chain,
                    replace_head, scratch_model, small_vgg)

__all__ = ["DEFAULT_WIDTHS", "SmallVGG", "check_positive_int", "first_linear", "freeze_features", "init_weights",
           "probe_chain", "replace_head", "scratch_model", "small_vgg"]
