"""Reusable layers: Split-Attention, DropBlock and selectable norms."""

from .drop_block import DropBlock2d
from .norm import NORM_LAYERS, freeze_batch_norm, group_norm, make_norm_layer
from .split_attention import SplitAttention, radix_softmax

__all__ = [
    "DropBlock2d",
    "NORM_LAYERS",
    "SplitAttention",
    "freeze_batch_norm",
    "group_norm",
    "make_norm_layer",
    "radix_softmax",
]
