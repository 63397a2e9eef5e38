"""Detections drawn onto images: boxes, class names and scores, and instance masks.

Drawing uses torchvision's ``draw_bounding_boxes`` and ``draw_segmentation_masks``; colours
follow the class (Pascal VOC's colour map, as the segmentation task's predictions), so one class
has one colour across images.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from ...utils.inputs import color_palette

MASK_THRESHOLD = 0.5


def keep_confident(output: Dict[str, Tensor], score_threshold: float) -> Dict[str, Tensor]:
    """The detections of one image whose score is at least ``score_threshold``."""
    keep = output["scores"] >= score_threshold
    return {key: value[keep] for key, value in output.items()}


def draw_detections(image: Tensor, output: Dict[str, Tensor], classes: Sequence[str], alpha: float = 0.5) -> Tensor:
    """(3, H, W) float image in 0..1 + one image's detections -> (3, H, W) uint8 picture.

    ``output``: ``boxes`` (N, 4) xyxy pixels, ``labels`` (N,), ``scores`` (N,), optional ``masks``
    (N, 1, H, W) probabilities, drawn where above ``MASK_THRESHOLD`` with opacity ``alpha``.
    """
    picture = (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    labels = output["labels"].tolist()
    if not labels:
        return picture
    palette = [tuple(int(c) for c in colour) for colour in color_palette(len(classes))]
    colours = [palette[label] for label in labels]
    if "masks" in output:
        masks = output["masks"][:, 0].cpu() > MASK_THRESHOLD
        picture = draw_segmentation_masks(picture, masks, alpha=alpha, colors=colours)
    captions = [f"{classes[label]} {score:.2f}" for label, score in zip(labels, output["scores"].tolist())]
    return draw_bounding_boxes(picture, output["boxes"].cpu(), captions, colors=colours, width=2)
