"""Joint image + label-map transforms for segmentation, built on ``torchvision.transforms.v2``.

Training follows PyTorch-Encoding: the long side is resized to a random length in
``[base_size x min_scale, base_size x max_scale]`` (bilinear for the image, nearest for
the labels), the result is padded to the crop size (image with 0, labels with
``IGNORE_INDEX`` so padding never counts), randomly cropped and flipped, then normalised.
Evaluation only normalises: images keep their size and the prediction code scales them.
Images may have 1, 3 or 4 channels (``channels``, the model's ``in_chans``); the normalisation
has one mean/std a channel (``splitattn.data.io.channel_stats``).
"""

from __future__ import annotations

import random
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from ...errors import UsageError
from ..geometry import scaled_size
from ..io import normalisation
from .label_maps import IGNORE_INDEX


def _to_tv(image: Image.Image, target: np.ndarray) -> Tuple[tv_tensors.Image, tv_tensors.Mask]:
    return TF.pil_to_tensor(image), tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(target)))


class RandomLongSideScale:
    """Resize image and mask so that the long side is a random integer in ``[base x lo, base x hi]``."""

    def __init__(self, base_size: int, scale_range: Tuple[float, float] = (0.5, 2.0)) -> None:
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise UsageError(f"scale range must satisfy 0 < min <= max, got {scale_range}.")
        self.low, self.high = int(base_size * lo), int(base_size * hi)

    def __call__(self, image: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
        size = list(scaled_size(image.shape[-2], image.shape[-1], random.randint(self.low, self.high)))
        return (
            TF.resize(image, size, InterpolationMode.BILINEAR, antialias=True),
            TF.resize(mask, size, InterpolationMode.NEAREST),
        )


class SegmentationTrainTransform:
    """(PIL image of C channels, (H, W) uint8 target) -> ((C, crop, crop) float image, (crop, crop) int64 target).

    ``mean``/``std`` default to ``channel_stats(channels)`` (ImageNet's for RGB).
    """

    def __init__(
        self,
        base_size: int,
        crop_size: int,
        scale_range: Tuple[float, float] = (0.5, 2.0),
        hflip: float = 0.5,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
        channels: int = 3,
    ) -> None:
        mean, std = normalisation(channels, mean, std)
        self.scale = RandomLongSideScale(base_size, scale_range)
        self.rest = v2.Compose(
            [
                v2.RandomCrop(crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}),
                v2.RandomHorizontalFlip(hflip),
                v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None}, scale=True),
                v2.Normalize(mean, std),
            ]
        )

    def __call__(self, image: Image.Image, target: np.ndarray) -> Tuple[Tensor, Tensor]:
        image_tv, mask = _to_tv(image, target)
        image_tv, mask = self.scale(image_tv, mask)
        image_tv, mask = self.rest(tv_tensors.Image(image_tv), tv_tensors.Mask(mask))
        return image_tv.as_subclass(Tensor), mask.as_subclass(Tensor)


class SegmentationEvalTransform:
    """(PIL image of C channels, (H, W) uint8 target) -> ((C, H, W) normalised image, (H, W) int64 target),
    sizes kept; ``mean``/``std`` default to ``channel_stats(channels)``."""

    def __init__(
        self, mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None, channels: int = 3
    ) -> None:
        mean, std = normalisation(channels, mean, std)
        self.mean, self.std = list(mean), list(std)

    def __call__(self, image: Image.Image, target: np.ndarray) -> Tuple[Tensor, Tensor]:
        return normalize_image(image, self.mean, self.std), torch.from_numpy(np.ascontiguousarray(target)).long()


def normalize_image(
    image: Image.Image, mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None
) -> Tensor:
    """PIL image of C channels -> (C, H, W) float tensor normalised with ``mean``/``std`` (default:
    ``channel_stats(C)``, ImageNet's for RGB)."""
    tensor = TF.to_dtype(TF.pil_to_tensor(image), torch.float32, scale=True)
    mean, std = normalisation(tensor.shape[0], mean, std)
    return TF.normalize(tensor, list(mean), list(std))
