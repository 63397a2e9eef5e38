"""What pictures share: class colours, a font sized to the image, a text colour that reads on a fill.

Text uses the scalable font Pillow ships (``ImageFont.load_default(size=...)``, Pillow >= 10.1 with
FreeType), sized from the image's short side so that a label reads at 1:1 on a 640 px photo and on a
4000 px one alike.
"""

from __future__ import annotations

import colorsys
from typing import Sequence, Tuple

import numpy as np
from PIL import ImageFont

from ..errors import MissingDependencyError

RGB = Tuple[int, int, int]

FONT_FRACTION = 0.032  # font size (px) per pixel of the image's short side
MIN_FONT_SIZE = 12
LINE_FRACTION = 1 / 160  # box outline width per pixel of the short side
GOLDEN_ANGLE = 0.381966  # 1 - 1/phi of a turn: successive hues stay far apart for any number of classes


def color_palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 colours for classes without a customary palette; none is black or near it.

    Hues step by the golden angle (consecutive classes far apart on the colour wheel) and
    saturation/value cycle through three levels, so that neighbouring ids also differ in
    brightness. Black stays free for void/ignore pixels.
    """
    levels = ((0.85, 0.95), (0.65, 0.80), (0.95, 0.70))  # (saturation, value)
    colours = np.zeros((num_classes, 3), dtype=np.uint8)
    for index in range(num_classes):
        saturation, value = levels[index % len(levels)]
        rgb = colorsys.hsv_to_rgb((index * GOLDEN_ANGLE) % 1.0, saturation, value)
        colours[index] = [round(channel * 255) for channel in rgb]
    return colours


def hex_colours(text: str) -> np.ndarray:
    """Whitespace-separated ``rrggbb`` hex colours -> (N, 3) uint8."""
    return np.array([[int(code[i : i + 2], 16) for i in (0, 2, 4)] for code in text.split()], dtype=np.uint8)


def luma(colour: Sequence[int]) -> float:
    """ITU-R BT.601 luma (0..255) of an RGB colour in 0..255: the brightness W3C's AERT compares."""
    return (299 * colour[0] + 587 * colour[1] + 114 * colour[2]) / 1000


def text_colour(fill: Sequence[int]) -> RGB:
    """Black or white text on ``fill``, whichever differs more in luma (at least 128 of 255, above
    the 125 W3C's AERT asks of text against its background)."""
    return (0, 0, 0) if luma(fill) >= 127.5 else (255, 255, 255)


def font_size_for(height: int, width: int) -> int:
    """Font size in pixels for text drawn onto an ``height`` x ``width`` image (3.2% of the short side, >= 12)."""
    return max(MIN_FONT_SIZE, round(FONT_FRACTION * min(height, width)))


def line_width_for(height: int, width: int) -> int:
    """Outline width in pixels for boxes drawn onto an ``height`` x ``width`` image (>= 2)."""
    return max(2, round(LINE_FRACTION * min(height, width)))


def load_font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's built-in scalable font at ``size`` pixels.

    Raises:
        MissingDependencyError: Pillow older than 10.1 or built without FreeType (only a fixed bitmap font).
    """
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError) as error:
        raise MissingDependencyError(
            "drawing labels needs Pillow >= 10.1 with FreeType: pip install -U pillow"
        ) from error
