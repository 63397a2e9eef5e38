"""Normalisation layers selectable by name.

Detection and segmentation train with 1-2 images per GPU, where BatchNorm statistics are
noise: there users pick SyncBatchNorm (statistics over all GPUs), frozen BN (the
pretrained statistics, no updates) or GroupNorm (no batch dependence).
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable, Union

from torch import nn

NormFactory = Callable[[int], nn.Module]

NORM_LAYERS = ("batchnorm", "syncbn", "frozenbn", "groupnorm")


def group_norm(num_channels: int, num_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with up to ``num_groups`` groups; fewer when the channel count needs it."""
    return nn.GroupNorm(math.gcd(num_groups, num_channels), num_channels)


def make_norm_layer(norm: Union[str, NormFactory]) -> NormFactory:
    """Turn a norm name (or a callable taking a channel count) into a norm factory.

    Names: ``batchnorm`` (default), ``syncbn``, ``frozenbn``, ``groupnorm``.
    """
    if callable(norm):
        return norm
    from torchvision.ops import FrozenBatchNorm2d  # on use: importing torchvision loads the compiler stack

    factories = {
        "batchnorm": nn.BatchNorm2d,
        "syncbn": nn.SyncBatchNorm,
        "frozenbn": FrozenBatchNorm2d,
        "groupnorm": partial(group_norm, num_groups=32),
    }
    key = str(norm).lower().replace("_", "").replace("-", "")
    if key not in factories:
        raise ValueError(f"Unknown norm_layer {norm!r}; choose one of {', '.join(NORM_LAYERS)}.")
    return factories[key]


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d/SyncBatchNorm in ``module`` by a FrozenBatchNorm2d with its statistics."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        from torchvision.ops import FrozenBatchNorm2d  # on use, as in make_norm_layer

        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        if module.affine:
            frozen.weight.copy_(module.weight.detach())
            frozen.bias.copy_(module.bias.detach())
        if module.track_running_stats:
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        replaced = freeze_batch_norm(child)
        if replaced is not child:
            setattr(module, name, replaced)
    return module
