"""Normalisation layers selectable by name.

Detection and segmentation train with 1-2 images per GPU, where BatchNorm statistics are
noise: there users pick SyncBatchNorm (statistics over all GPUs), frozen BN (the
pretrained statistics, no updates) or GroupNorm (no batch dependence).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, Union

import torch
from torch import nn

from ..errors import UsageError

NormFactory = Callable[[int], nn.Module]

NORM_LAYERS = ("batchnorm", "syncbn", "frozenbn", "groupnorm")
# The norms whose layers hold BatchNorm statistics and affine parameters: they can take ImageNet weights.
BATCH_STATISTICS_NORMS = ("batchnorm", "syncbn", "frozenbn")


def group_norm(num_channels: int, num_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with up to ``num_groups`` groups; fewer when the channel count needs it."""
    return nn.GroupNorm(math.gcd(num_groups, num_channels), num_channels)


def make_norm_layer(norm: Union[str, NormFactory]) -> NormFactory:
    """Turn a norm name (or a callable taking a channel count) into a norm factory.

    Names: ``batchnorm`` (default), ``syncbn``, ``frozenbn``, ``groupnorm``. A norm-layer
    *instance* (``nn.BatchNorm2d(64)``) raises ``TypeError``: every layer needs its own module
    with its own channel count, so pass the class, a factory or a name.
    """
    if isinstance(norm, nn.Module):
        raise TypeError(
            f"norm_layer got a module instance ({norm!r}); pass the class (nn.BatchNorm2d), a factory "
            f"taking a channel count (lambda c: nn.GroupNorm(8, c)) or a name ({', '.join(NORM_LAYERS)})."
        )
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
        raise UsageError(f"Unknown norm_layer {norm!r}; choose one of {', '.join(NORM_LAYERS)}.")
    return factories[key]


def has_learnable_weight(norm: nn.Module) -> bool:
    """Whether ``norm`` has an affine weight that training updates (not ``FrozenBatchNorm2d``'s buffer)."""
    weight = getattr(norm, "weight", None)
    return isinstance(weight, nn.Parameter) and weight.requires_grad


def batch_statistics_are_local(norm: nn.Module) -> bool:
    """Whether ``norm`` normalises a training batch with statistics of this process's images only.

    True for a training-mode BatchNorm, and for a SyncBatchNorm outside a process group of
    several processes (it then falls back to plain BatchNorm). False for a SyncBatchNorm whose
    group spans several processes (statistics over all their images: one image per process
    is fine under torchrun), for eval mode and for other norms.
    """
    if not isinstance(norm, nn.modules.batchnorm._BatchNorm) or not norm.training:
        return False
    if isinstance(norm, nn.SyncBatchNorm) and torch.distributed.is_available() and torch.distributed.is_initialized():
        group = norm.process_group if norm.process_group is not None else torch.distributed.group.WORLD
        return torch.distributed.get_world_size(group) == 1
    return True


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
