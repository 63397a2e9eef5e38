"""Reading images and listing sample files: one implementation for every task.

Every loader (classification, segmentation, detection, ``predict``) reads pixels through
``read_image`` and filters file listings through ``is_hidden``, so an image is the same
array wherever it is used:

- the EXIF orientation tag is applied (phone photos are stored rotated; annotations are
  drawn on the upright picture), as ``PIL.ImageOps.exif_transpose`` does;
- high-bit-depth greyscale (``I;16*``, ``I``, ``F``) is scaled by its type's full range
  to 8 bits, as ``torchvision.transforms.v2.functional.to_dtype(..., scale=True)`` does
  (``uint16 -> uint8`` is ``v >> 8``; ``int32 -> uint8`` is ``v >> 23``; float is taken as
  0..1), never clipped at 255 by ``convert`` and never stretched per image;
- the result has the model's channel count: 1 (``L``), 3 (``RGB``) or 4 (``RGBA``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps

__all__ = ["CHANNEL_MODES", "is_hidden", "read_image", "to_8bit"]

CHANNEL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
# bits to drop when scaling each high-bit-depth mode to 8 bits (to_dtype(..., scale=True))
_SHIFTS = {"I;16": 8, "I;16L": 8, "I;16B": 8, "I;16N": 8, "I": 23}


def is_hidden(path: Union[str, Path], root: Union[str, Path, None] = None) -> bool:
    """True when ``path`` (or a folder between ``root`` and it) starts with a dot: ``.DS_Store``,
    macOS's ``._x.jpg`` resource forks, ``.ipynb_checkpoints/``, ``.git/``. Such files are never samples."""
    parts = Path(path).relative_to(root).parts if root is not None else Path(path).parts
    return any(part.startswith(".") and part not in (".", "..") for part in parts)


def to_8bit(image: Image.Image) -> Image.Image:
    """``image`` with high-bit-depth greyscale scaled to mode ``L`` by the type's full range; other modes as they are.

    ``I;16*`` (16-bit PNG/TIFF) keeps the top 8 of 16 bits, ``I`` (32-bit signed) the top 8 of 31 (negative
    values become 0), ``F`` (32-bit float) is read as 0..1 and clipped there. Raises nothing for other modes.
    """
    if image.mode in _SHIFTS:
        values = np.asarray(image).astype(np.int64)
        return Image.fromarray((np.clip(values, 0, None) >> _SHIFTS[image.mode]).clip(0, 255).astype(np.uint8), "L")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float32)
        return Image.fromarray(np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8), "L")
    return image


def read_image(path: Union[str, Path], channels: int = 3) -> Image.Image:
    """Decode the image at ``path`` upright, at 8 bits, with ``channels`` channels (1, 3 or 4).

    Greyscale, palette, CMYK, alpha and 16/32-bit images are all accepted; greyscale becomes RGB by
    repetition, RGB becomes ``L`` by ITU-R 601 luma when ``channels=1``. Raises ``OSError`` /
    ``PIL.UnidentifiedImageError`` for unreadable files and ``ValueError`` for an unsupported ``channels``.
    """
    if channels not in CHANNEL_MODES:
        raise ValueError(f"images can be read with 1, 3 or 4 channels, not {channels}.")
    with Image.open(path) as opened:
        opened.load()
        upright = ImageOps.exif_transpose(opened)
    image = to_8bit(upright)
    mode = CHANNEL_MODES[channels]
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # a palette image's transparency cannot go straight to L/RGB cleanly
    return image if image.mode == mode else image.convert(mode)
