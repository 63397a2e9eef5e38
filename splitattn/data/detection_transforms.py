"""Joint image + target transforms for detection training: a random horizontal flip, nothing else.

The detection model's own ``GeneralizedRCNNTransform`` resizes (multiscale training comes from
its ``min_size`` tuple) and normalises, so the data set neither resizes nor changes colours;
boxes, masks and image must stay in one coordinate frame, which flipping them together keeps.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from .detection import DetectionTransform, Target


def horizontal_flip(image: Tensor, target: Target) -> Tuple[Tensor, Target]:
    """Mirror a [C, H, W] image left-right with its target: x1, x2 of the [N, 4] ``boxes`` become
    W - x2, W - x1 and the [N, H, W] ``masks`` are mirrored too. The input target is not modified."""
    width = image.shape[-1]
    flipped = dict(target)
    boxes = target["boxes"]
    flipped["boxes"] = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
    if "masks" in target:
        flipped["masks"] = target["masks"].flip(-1)
    return image.flip(-1), flipped


class RandomHorizontalFlip:
    """``horizontal_flip`` with probability ``p`` (drawn from torch's generator, which DataLoader seeds per worker)."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must be in 0..1, got {p}.")
        self.p = p

    def __call__(self, image: Tensor, target: Target) -> Tuple[Tensor, Target]:
        if torch.rand(()).item() < self.p:
            return horizontal_flip(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


def build_detection_train_transform(hflip_prob: float = 0.5) -> DetectionTransform:
    """The training transform of the Mask/Faster R-CNN recipes (detectron2, torchvision references)."""
    return RandomHorizontalFlip(hflip_prob)
