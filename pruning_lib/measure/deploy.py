"""Deployment forms: the same network as it would be run for inference (BatchNorm folded, channels-last).

Every form computes the same function as ``"eager"`` (up to float rounding) and is applied to a
*copy*, so FLOPs, parameters and size are unchanged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["FORMS", "ChannelsLast", "deployment_form", "deployment_parts", "fold_batchnorm"]


#: How a model can be run when it is timed. Every form computes the same function as ``"eager"``
#: (up to float rounding) and is applied to a *copy*, so FLOPs, parameters and size are unchanged.
#:
#: - ``"eager"``: the model as it is, NCHW tensors (PyTorch's default).
#: - ``"fold_bn"``: each BatchNorm2d that directly follows a Conv2d is folded into that conv's
#:   weight and bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``) and replaced by ``Identity``.
#: - ``"channels_last"``: weights and the input in NHWC memory layout
#:   (``torch.channels_last``); on CPU, max-pool and BatchNorm have fast NHWC kernels.
#: - ``"deploy"``: ``fold_bn`` and ``channels_last`` together: a plain-PyTorch inference form
#:   with no deprecated or experimental API (no TorchScript, no compiler).
FORMS = ("eager", "fold_bn", "channels_last", "deploy")


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with every conv -> BatchNorm pair folded into one conv (1-, 2- and 3-d).

    The pair is found by tracing with ``torch.fx``: a BatchNorm module whose only input is a
    (not transposed) conv module's output, and that conv's output has no other reader. The conv then gets
    ``w' = w * gamma / sqrt(var + eps)`` and ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``
    (inference statistics), and the BatchNorm becomes ``nn.Identity``. The copy computes the same
    function as ``model`` in eval mode. Models that ``torch.fx`` cannot trace raise the tracer's error.
    """
    import torch.fx as fx
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    graph = fx.Tracer().trace(folded)
    modules = dict(folded.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.modules.batchnorm._BatchNorm):
            continue
        src = node.args[0] if node.args else None
        conv = modules.get(src.target) if isinstance(src, fx.Node) and src.op == "call_module" else None
        if isinstance(conv, nn.modules.conv._ConvNd) and not conv.transposed and len(src.users) == 1:
            pairs.append((src.target, node.target))
    for conv_name, bn_name in pairs:
        _set_submodule(folded, conv_name, fuse_conv_bn_eval(modules[conv_name], modules[bn_name]))
        _set_submodule(folded, bn_name, nn.Identity())
    return folded


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, module)


class ChannelsLast(nn.Module):
    """Runs ``model`` (weights already NHWC) on the input converted to ``torch.channels_last``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)


def deployment_parts(model: nn.Module, form: str = "deploy") -> tuple[nn.Module, torch.memory_format]:
    """`model` in `form` without the input conversion: ``(module, memory format its inputs must have)``.

    For timing a piece of a network (`latency`): inside the network its input is already in that format, so the
    conversion `deployment_form` times once per forward pass is not the piece's cost.
    """
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose one of {FORMS}")
    module = fold_batchnorm(model) if form in ("fold_bn", "deploy") else copy.deepcopy(model).eval()
    if form in ("channels_last", "deploy"):
        return module.to(memory_format=torch.channels_last), torch.channels_last
    return module, torch.contiguous_format


def deployment_form(model: nn.Module, form: str = "deploy") -> nn.Module:
    """``model`` as it would be run for inference in one of :data:`FORMS` (a copy; ``"eager"``: itself).

    The conversion to ``channels_last`` of the input happens inside the returned module's
    ``forward``, so it is timed with the model (it is part of the cost of that form).
    """
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose one of {FORMS}")
    if form == "eager":
        return model
    runner = fold_batchnorm(model) if form in ("fold_bn", "deploy") else copy.deepcopy(model).eval()
    return ChannelsLast(runner) if form in ("channels_last", "deploy") else runner
