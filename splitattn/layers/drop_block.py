"""DropBlock (Ghiasi et al. 2018): structured dropout of contiguous square regions.

The official ResNeSt PyTorch code declares DropBlock but raises NotImplementedError; the
authors' GluonCV code (``resnest/gluon/dropblock.py``) implements it, placed after the norms
of stages 3 and 4 with block size 3. As there and in the paper's Algorithm 1, every channel
of every image gets its own mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError


def check_drop_prob(prob: float) -> float:
    """``prob`` as a float, or ``ValueError`` unless ``0 <= prob < 1`` (1 would drop everything)."""
    value = float(prob)
    if not 0.0 <= value < 1.0:  # NaN fails too
        raise UsageError(f"DropBlock probability must satisfy 0 <= p < 1, got {prob!r}.")
    return value


class DropBlock2d(nn.Module):
    """Zero out ``block_size`` x ``block_size`` regions, independently per channel, then rescale.

    Block centres are drawn where a whole block fits, with the rate gamma of the paper (Eq. 1)
    so that the expected dropped fraction is ``drop_prob``; the kept units are scaled by
    (all units / kept units) of the batch, as ``torchvision.ops.drop_block2d`` does. Identity
    in eval mode. Same statistics as ``torchvision.ops.drop_block2d`` (tested), which is not
    used itself because its probability is a Python float: one compiled graph per value under
    ``torch.compile`` and no tensor in TorchScript.

    ``drop_prob`` is a 0-dim float32 buffer (not saved in the state dict), so that ramping it
    during training (``ResNeSt.set_drop_block_prob``, ``set_drop_prob``) changes a tensor's value
    and never recompiles a ``torch.compile`` graph. With ``drop_prob == 0`` in training the
    output equals the input (no block is drawn).

    Mixed precision: for an fp16/bf16 input (autocast) the mask is drawn, counted and applied in
    float32 and the product rounded once to the input's dtype, so a seed gives the same mask as in
    float32 and the statistics above hold (tested against ``drop_block2d`` in float32).

    Shape: (N, C, H, W) -> (N, C, H, W), in the input's dtype.
    """

    def __init__(self, drop_prob: float = 0.0, block_size: int = 3) -> None:
        super().__init__()
        if block_size < 1 or block_size % 2 == 0:
            raise UsageError(f"DropBlock2d needs an odd block_size >= 1, got {block_size}.")
        self.register_buffer("drop_prob", torch.tensor(check_drop_prob(drop_prob)), persistent=False)
        self.block_size = block_size

    def set_drop_prob(self, prob: float) -> None:
        """Set the probability in place (no recompilation); ``ValueError`` unless ``0 <= prob < 1``."""
        self.drop_prob.fill_(check_drop_prob(prob))

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        batch, channels, height, width = x.shape
        block = min(self.block_size, height, width)
        block -= 1 - block % 2  # keep it odd so the padded max-pool gives back H x W
        valid_h, valid_w = height - block + 1, width - block + 1
        # The mask is drawn, counted and scaled in float32 whatever x's dtype (autocast gives fp16/bf16):
        # bf16 uniform draws come in steps of 2**-8, too coarse for gamma ~ 0.01 (the kept fraction drops
        # from 0.904 to 0.892), and an fp16 count above 65,504 is inf, making the rescale 0 (all dropped).
        gamma = self.drop_prob.float() * (height * width / (block * block * valid_h * valid_w))
        seeds = torch.rand((batch, channels, valid_h, valid_w), dtype=torch.float32, device=x.device) < gamma
        pad = block // 2
        seeds = F.pad(seeds.float(), (pad, pad, pad, pad))
        keep = 1.0 - F.max_pool2d(seeds, kernel_size=block, stride=1, padding=pad)
        scale = keep.numel() / keep.sum().clamp(min=1.0)
        # One rounding of the float32 product: a bf16/fp16 scale would shift the output mean (up to 0.4% in bf16).
        return (x * (keep * scale)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"drop_prob={float(self.drop_prob):.4g}, block_size={self.block_size}"
