"""Joint image + target transforms for detection training, through ``torchvision.transforms.v2``.

The data sets give ``tv_tensors`` (``Image``, ``BoundingBoxes``, ``Mask``), so each v2 transform moves
the image, its boxes and its masks together, and ``SanitizeBoundingBoxes`` drops any box a transform
made degenerate together with its label, area, crowd flag and mask (torchvision's detection
references do the same). The training recipe of the Mask/Faster R-CNN papers (detectron2,
torchvision references) is a random horizontal flip and nothing else: the detection model's own
``GeneralizedRCNNTransform`` resizes (multiscale training comes from its ``min_size`` tuple) and
normalises, so the data set neither resizes nor changes colours.
"""

from __future__ import annotations

from typing import Any, Tuple

from torch import Tensor
from torchvision.transforms import v2

from ...errors import UsageError
from .records import DetectionTransform


def _per_box_entries(inputs: Any) -> Tuple[Tensor, ...]:
    """The target entries that hold one value per box, besides the boxes and masks (which v2 finds)."""
    target = inputs[1]
    return tuple(target[key] for key in ("labels", "area", "iscrowd") if key in target)


def build_detection_train_transform(hflip_prob: float = 0.5) -> DetectionTransform:
    """``transform(image, target) -> (image, target)`` of the Mask/Faster R-CNN recipes: ``v2.RandomHorizontalFlip``
    (probability ``hflip_prob``, drawn from torch's generator, which DataLoader seeds per worker; boxes x1, x2
    become W - x2, W - x1 and masks are mirrored) then ``v2.SanitizeBoundingBoxes`` (boxes under 1 pixel wide
    or high dropped with their ``labels``, ``area``, ``iscrowd`` and masks). The image and target must be
    ``tv_tensors`` as the detection data sets give them; the input target is not modified.
    Raises ``ValueError`` for a probability outside 0..1."""
    if not 0.0 <= hflip_prob <= 1.0:
        raise UsageError(f"flip probability must be in 0..1, got {hflip_prob}.")
    return v2.Compose([v2.RandomHorizontalFlip(hflip_prob), v2.SanitizeBoundingBoxes(labels_getter=_per_box_entries)])
