"""Whole-image prediction: single-scale, or multi-scale + flip as in PyTorch-Encoding.

For each scale s the image is resized so that its long side is ``base_size x s`` (or its own
long side x s without a base size). An image that fits in ``crop_size`` runs in one pass;
a larger one is covered by crop-size windows with a stride of 2/3 of the crop, and the
overlaps are averaged. The class probabilities of every scale (and of the mirrored image)
are resized back to the original size and averaged; the prediction is their argmax.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...data.geometry import inference_size, sliding_windows, window_starts
from ...errors import UsageError

__all__ = ["MIN_SIDE", "MULTI_SCALES", "predict_probs", "window_starts"]

MULTI_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)  # PyTorch-Encoding's ADE20K/Pascal testing scales
MIN_SIDE = 32  # the backbone's smallest input


def _forward_probs(model: nn.Module, image: Tensor, flip: bool) -> Tensor:
    """(N, 3, h, w) -> (N, K, h, w) softmax probabilities, averaged with the mirrored pass if ``flip``."""
    probs = model(image)["out"].float().softmax(1)
    if flip:
        probs = (probs + model(image.flip(-1))["out"].float().softmax(1).flip(-1)) / 2
    return probs


def _sliding_probs(model: nn.Module, image: Tensor, crop_size: Optional[int], flip: bool) -> Tensor:
    """Class probabilities of a (1, 3, h, w) image at its own size: one pass or crop-size windows
    (``data.geometry.sliding_windows``), overlaps averaged."""
    height, width = image.shape[-2:]
    windows = sliding_windows(height, width, crop_size)
    if len(windows) == 1:
        return _forward_probs(model, image, flip)
    total: Optional[Tensor] = None
    counts = torch.zeros(1, 1, height, width, device=image.device)
    for top, left, win_h, win_w in windows:
        probs = _forward_probs(model, image[..., top : top + win_h, left : left + win_w], flip)
        if total is None:
            total = torch.zeros(1, probs.shape[1], height, width, device=image.device)
        total[..., top : top + win_h, left : left + win_w] += probs
        counts[..., top : top + win_h, left : left + win_w] += 1
    return total / counts


@torch.no_grad()
def predict_probs(
    model: nn.Module,
    image: Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    base_size: Optional[int] = None,
    crop_size: Optional[int] = None,
) -> Tensor:
    """(3, H, W) normalised image -> (K, H, W) class probabilities at the image's own size.

    ``model`` must be in eval mode and return ``{"out": logits}``; sides below 32 px after
    scaling are raised to 32.
    """
    if image.dim() != 3:
        raise UsageError(f"predict_probs takes one (3, H, W) image, got shape {tuple(image.shape)}.")
    height, width = image.shape[-2:]
    batch = image[None]
    total: Optional[Tensor] = None
    for scale in scales:
        size = list(inference_size(height, width, scale, base_size, MIN_SIDE))
        scaled = (
            batch if size == [height, width] else F.interpolate(batch, size=size, mode="bilinear", align_corners=False)
        )
        probs = _sliding_probs(model, scaled, crop_size, flip)
        if size != [height, width]:
            probs = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)
        total = probs if total is None else total + probs
    return (total / len(scales))[0]
