"""Image geometry of segmentation inference, without torch: long-side scaling and sliding windows.

Shared by the PyTorch prediction code (``splitattn.tasks.segmentation.inference``) and the exported-file
runtime (``splitattn.deploy.runtime``, NumPy), so both resize and tile an image alike. The rules are
PyTorch-Encoding's testing code (``encoding/models/sseg/base.py``, ``MultiEvalModule``): the long side is
``base_size x scale``; an image larger than the crop is covered by crop-size windows with a stride of 2/3 of
the crop, the last window flush with the border.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

Window = Tuple[int, int, int, int]  # top, left, height, width


def scaled_size(height: int, width: int, long_side: int) -> Tuple[int, int]:
    """(height, width) with the longer side resized to ``long_side``, aspect ratio kept (rounded)."""
    if height >= width:
        return long_side, max(1, int(width * long_side / height + 0.5))
    return max(1, int(height * long_side / width + 0.5)), long_side


def inference_size(
    height: int, width: int, scale: float = 1.0, base_size: Optional[int] = None, min_side: int = 1
) -> Tuple[int, int]:
    """The size an ``height`` x ``width`` image is predicted at for ``scale``: long side
    ``ceil((base_size or the image's long side) x scale)``, each side raised to at least ``min_side``."""
    long_side = int(math.ceil((base_size or max(height, width)) * scale))
    new_height, new_width = scaled_size(height, width, long_side)
    return max(min_side, new_height), max(min_side, new_width)


def window_starts(length: int, window: int, stride: int) -> List[int]:
    """Start offsets of windows of ``window`` pixels covering ``0..length`` (the last one flush with the end)."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return starts + [length - window]


def sliding_windows(height: int, width: int, crop_size: Optional[int]) -> List[Window]:
    """The windows (top, left, height, width) that cover an ``height`` x ``width`` image: the whole image when
    it fits in ``crop_size`` (or without one), else ``crop_size`` squares (clipped to the image) at a stride of
    ``ceil(2/3 crop_size)``; overlapping predictions are averaged by the caller."""
    if crop_size is None or (height <= crop_size and width <= crop_size):
        return [(0, 0, height, width)]
    stride = max(1, math.ceil(crop_size * 2 / 3))
    win_h, win_w = min(crop_size, height), min(crop_size, width)
    return [
        (top, left, win_h, win_w)
        for top in window_starts(height, win_h, stride)
        for left in window_starts(width, win_w, stride)
    ]
