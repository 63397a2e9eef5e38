"""Image galleries: a grid of images with a caption above each and labelled boxes drawn on them (the worst
classification errors, the missed and false detections). Matplotlib's object API, no ``pyplot``.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from .diagnostics import new_figure

ImageLike = Union[str, Path, Image.Image, np.ndarray]

TILE_PIXELS = 480  # gallery images are downscaled to this long side (boxes scaled with them)


@dataclass
class GalleryBox:
    """A box drawn on a gallery tile: ``box`` x1 y1 x2 y2 in the image's pixels, a ``label`` above it."""

    box: Sequence[float]
    label: str
    colour: str
    dashed: bool = False


@dataclass
class GalleryTile:
    """One image of a gallery with its caption (drawn above it) and boxes."""

    image: ImageLike
    caption: str
    boxes: Sequence[GalleryBox] = ()


def _load_tile(image: ImageLike, long_side: int = TILE_PIXELS) -> Tuple[Optional[Image.Image], float]:
    """``image`` (a path, PIL image or (H, W[, 3]) uint8 array) as RGB, downscaled to ``long_side`` at most,
    and the scale applied to coordinates; ``(None, 1.0)`` for a file that cannot be read (an evaluation counts
    such an image's objects as missed, so it can be among the errors drawn)."""
    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as opened:
                picture = opened.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return None, 1.0
    elif isinstance(image, np.ndarray):
        picture = Image.fromarray(image).convert("RGB")
    else:
        picture = image.convert("RGB")
    scale = min(1.0, long_side / max(picture.size))
    if scale < 1.0:
        picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))))
    return picture, scale


def gallery_figure(tiles: Sequence[GalleryTile], title: str, columns: int = 4, tile_inches: float = 3.6) -> Figure:
    """A grid of images, each with its caption above it and its boxes.

    Args:
        tiles: the images (paths, PIL images or uint8 arrays; downscaled to 480 px on the long side; a file
            that cannot be read leaves its tile empty, saying so), their captions (lines kept, long lines
            wrapped) and boxes (solid or dashed, labelled when a label is set).
        title: the figure's title.
        columns: images per row.
        tile_inches: width of one image; rows are as tall as the median image's aspect ratio needs.

    Returns:
        The figure.
    """
    columns = max(1, min(columns, len(tiles)))
    rows = max(1, math.ceil(len(tiles) / columns))
    pictures = [_load_tile(tile.image) for tile in tiles]
    shapes = [picture.height / picture.width for picture, _ in pictures if picture is not None]
    aspect = float(np.median(shapes)) if shapes else 1.0
    caption_lines = max([len(tile.caption.splitlines()) for tile in tiles] + [1])
    row_inches = tile_inches * aspect + 0.18 * caption_lines + 0.15
    figure = new_figure(tile_inches * columns, row_inches * rows + 0.5)
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for axis, tile, (picture, scale) in zip(axes, tiles, pictures):
        lines = [wrapped for line in tile.caption.splitlines() for wrapped in textwrap.wrap(line, 44)]
        axis.set_title("\n".join(lines + ([] if picture is not None else ["(the image cannot be read)"])), fontsize=8)
        axis.set_xticks([])
        axis.set_yticks([])
        if picture is None:
            continue
        axis.imshow(np.asarray(picture))
        for box in tile.boxes:
            x1, y1, x2, y2 = (float(v) * scale for v in box.box)
            axis.add_patch(
                Rectangle(
                    (x1, y1),
                    x2 - x1,
                    y2 - y1,
                    fill=False,
                    edgecolor=box.colour,
                    linewidth=1.8,
                    linestyle="--" if box.dashed else "-",
                )
            )
            if not box.label:
                continue
            axis.text(
                x1,
                y1,
                box.label,
                fontsize=6.5,
                color="white",
                va="bottom",
                clip_on=True,
                bbox={"facecolor": box.colour, "edgecolor": "none", "pad": 1.0, "alpha": 0.85},
            )
    for axis in axes[len(tiles) :]:
        axis.set_axis_off()
    figure.suptitle(title)
    return figure
