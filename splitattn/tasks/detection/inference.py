"""Detections drawn onto images: boxes, class names and scores, and instance masks.

Boxes and masks are drawn by torchvision's ``draw_bounding_boxes`` and ``draw_segmentation_masks``;
each label is "<class> <score>" in Pillow's scalable font on a filled rectangle of the class's colour,
in black or white text (whichever contrasts more), above the box (inside it at the image's top edge).
Font size and line width follow the image's short side (``viz.drawing``), so labels read at 1:1 on
a 640 px photo and on a 4000 px one. Colours follow the class, so one class has one colour across
images; the highest-scoring labels are drawn last (on top).
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
from PIL import Image, ImageDraw
from PIL.ImageFont import FreeTypeFont
from torch import Tensor
from torchvision.transforms.v2.functional import pil_to_tensor, to_pil_image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from ...viz.drawing import color_palette, font_size_for, line_width_for, load_font, text_colour

MASK_THRESHOLD = 0.5
Rect = Tuple[int, int, int, int]


def keep_confident(output: Dict[str, Tensor], score_threshold: float) -> Dict[str, Tensor]:
    """The detections of one image whose score is at least ``score_threshold``."""
    keep = output["scores"] >= score_threshold
    return {key: value[keep] for key, value in output.items()}


def captions(output: Dict[str, Tensor], classes: Sequence[str]) -> List[str]:
    """ "<class name> <score, 2 decimals>" for each detection of ``output``."""
    return [
        f"{classes[label]} {score:.2f}" for label, score in zip(output["labels"].tolist(), output["scores"].tolist())
    ]


def _label_font(height: int, width: int) -> Tuple[FreeTypeFont, int]:
    """The label font for an ``height`` x ``width`` image and the padding (px) around its text."""
    font = load_font(font_size_for(height, width))
    return font, max(2, round(font.size / 5))


def label_rects(boxes: Tensor, texts: Sequence[str], height: int, width: int) -> List[Rect]:
    """Where each box's label goes: (left, top, right, bottom) pixel rectangles, right/bottom exclusive.

    ``boxes``: (N, 4) xyxy pixels of an ``height`` x ``width`` image. A label sits on the box's top
    edge, outside the box, or inside it when the box touches the image's top; it is shifted left
    to stay within the image when the box is near the right edge.
    """
    font, pad = _label_font(height, width)
    ascent, descent = font.getmetrics()
    label_height = ascent + descent + 2 * pad
    rects = []
    for (x0, y0, _, _), text in zip(boxes.tolist(), texts):
        label_width = round(font.getlength(text)) + 2 * pad
        left = int(max(0, min(x0, width - label_width)))
        top = int(y0) - label_height if y0 >= label_height else int(max(0, y0))
        rects.append((left, top, left + label_width, top + label_height))
    return rects


def draw_detections(image: Tensor, output: Dict[str, Tensor], classes: Sequence[str], alpha: float = 0.45) -> Tensor:
    """(3, H, W) float image in 0..1 + one image's detections -> (3, H, W) uint8 picture.

    ``output``: ``boxes`` (N, 4) xyxy pixels, ``labels`` (N,) indices into ``classes``, ``scores`` (N,),
    optional ``masks`` (N, 1, H, W) probabilities, filled where above ``MASK_THRESHOLD`` in the class
    colour with opacity ``alpha``. The caller chooses which detections to draw (score threshold,
    maximum number).

    Raises:
        MissingDependencyError: Pillow without its scalable font (see ``viz.drawing.load_font``).
    """
    picture = (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    if not len(output["labels"]):
        return picture
    order = output["scores"].argsort()  # lowest score first: the best labels end up on top
    output = {key: value.cpu()[order] for key, value in output.items()}
    palette = [tuple(int(c) for c in colour) for colour in color_palette(len(classes))]
    colours = [palette[label] for label in output["labels"].tolist()]
    height, width = picture.shape[-2:]
    if "masks" in output:
        picture = draw_segmentation_masks(picture, output["masks"][:, 0] > MASK_THRESHOLD, alpha=alpha, colors=colours)
    picture = draw_bounding_boxes(picture, output["boxes"], colors=colours, width=line_width_for(height, width))
    texts = captions(output, classes)
    canvas: Image.Image = to_pil_image(picture)
    draw = ImageDraw.Draw(canvas)
    font, pad = _label_font(height, width)
    for rect, text, colour in zip(label_rects(output["boxes"], texts, height, width), texts, colours):
        draw.rectangle((rect[0], rect[1], rect[2] - 1, rect[3] - 1), fill=colour)
        draw.text((rect[0] + pad, rect[1] + pad), text, fill=text_colour(colour), font=font)
    return pil_to_tensor(canvas)
