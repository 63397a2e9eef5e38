"""DropBlock (Ghiasi et al. 2018): structured dropout of contiguous square regions.

The official ResNeSt code declares DropBlock but raises NotImplementedError; this is a
working implementation with the paper's placement (block size 3, stages 3 and 4).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DropBlock2d(nn.Module):
    """Zero out ``block_size`` x ``block_size`` regions, then rescale to keep the mean.

    ``drop_prob`` is a plain attribute so a training loop can ramp it (the ResNeSt recipe
    ramps it linearly from 0 to its target); see ``ResNeSt.set_drop_block_prob``.
    The block seeds are sampled so that the expected fraction of dropped units equals
    ``drop_prob`` (the gamma of the paper, Eq. 1). One mask per image, shared by all
    channels, as in the paper. Identity in eval mode or when ``drop_prob == 0``.

    Shape: (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, drop_prob: float = 0.0, block_size: int = 3) -> None:
        super().__init__()
        if block_size < 1 or block_size % 2 == 0:
            raise ValueError(f"DropBlock2d needs an odd block_size >= 1, got {block_size}.")
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"DropBlock2d needs 0 <= drop_prob < 1, got {drop_prob}.")
        self.drop_prob = float(drop_prob)
        self.block_size = block_size

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        batch, _, height, width = x.shape
        block = min(self.block_size, height, width)
        block -= 1 - block % 2  # keep it odd so the padded max-pool gives back H x W
        valid_h, valid_w = height - block + 1, width - block + 1
        # Seeds only where a whole block fits; gamma makes the dropped fraction drop_prob.
        gamma = self.drop_prob * height * width / (block * block * valid_h * valid_w)
        seeds = torch.rand((batch, 1, valid_h, valid_w), dtype=x.dtype, device=x.device) < gamma
        pad = block // 2
        seeds = F.pad(seeds.to(x.dtype), (pad, pad, pad, pad))
        dropped = F.max_pool2d(seeds, kernel_size=block, stride=1, padding=pad)
        keep = 1.0 - dropped
        scale = keep.numel() / keep.sum().clamp(min=1.0)
        return x * keep * scale

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, block_size={self.block_size}"
