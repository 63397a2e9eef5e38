"""The ResNeSt recipe's image transforms and batch mixing.

Training: random-resized crop, horizontal flip, AutoAugment (ImageNet policy), colour
jitter, PCA lighting noise (AlexNet), normalisation. Evaluation: resize the short side to
``crop / crop_pct``, centre-crop; bicubic from 320 px up, as the published models do.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from ..models.registry import IMAGENET_MEAN, IMAGENET_STD
from .io import channel_stats

# PCA of ImageNet RGB pixels (AlexNet, Krizhevsky et al. 2012), pixel values in [0, 1].
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
BICUBIC_FROM = 320


def interpolation_for(size: int) -> InterpolationMode:
    """Bicubic from 320 px up (the large models' published setting), bilinear below."""
    return InterpolationMode.BICUBIC if size >= BICUBIC_FROM else InterpolationMode.BILINEAR


class Lighting:
    """AlexNet-style PCA lighting noise on a (C, H, W) tensor in [0, 1]: add ``eigvec @ (alpha * eigval)``.

    ``alpha`` ~ N(0, ``std``) per image, drawn from torch's generator. The RGB shift goes to the first three
    channels (a fourth, alpha, is left as it is); a single-channel image gets the shift's mean (its luminance
    part, a brightness change). Raises ``ValueError`` for other channel counts.
    """

    def __init__(self, std: float, eigval: Sequence[float] = IMAGENET_EIGVAL,
                 eigvec: Sequence[Sequence[float]] = IMAGENET_EIGVEC) -> None:
        self.std = std
        self.eigval = torch.tensor(eigval)
        self.eigvec = torch.tensor(eigvec)

    def __call__(self, image: Tensor) -> Tensor:
        if self.std == 0:
            return image
        if image.shape[0] not in (1, 3, 4):
            raise ValueError(f"PCA lighting is for images of 1, 3 or 4 channels, got {image.shape[0]}.")
        alpha = torch.randn(3) * self.std
        rgb = self.eigvec @ (alpha * self.eigval)
        if image.shape[0] == 1:
            return image + rgb.mean()
        shift = torch.cat([rgb, rgb.new_zeros(image.shape[0] - 3)])
        return image + shift.view(-1, 1, 1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(std={self.std})"


def build_train_transform(
    size: int,
    augment: bool = True,
    scale: Tuple[float, float] = (0.08, 1.0),
    hflip: float = 0.5,
    auto_augment: bool = False,
    color_jitter: float = 0.0,
    pca_lighting: float = 0.0,
    crop_pct: float = 0.875,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    channels: int = 3,
) -> T.Compose:
    """Training pipeline for PIL images of ``channels`` channels (1, 3 or 4: the model's ``in_chans``);
    ``mean``/``std`` default to ``channel_stats(channels)`` (ImageNet's for RGB). ``augment=False`` gives the
    deterministic evaluation pipeline instead. Raises ``ValueError`` for AutoAugment on 4 channels (its
    colour operations are defined for 1 and 3)."""
    default_mean, default_std = channel_stats(channels)
    mean, std = (default_mean if mean is None else mean), (default_std if std is None else std)
    if auto_augment and augment and channels == 4:
        raise ValueError("AutoAugment is defined for 1- and 3-channel images, not 4; turn it off (auto_augment: "
                         "false, --no-auto-augment) to train a 4-channel model.")
    if not augment:
        return build_eval_transform(size, crop_pct, mean, std)
    steps: list = [T.RandomResizedCrop(size, scale=tuple(scale), interpolation=interpolation_for(size))]
    if hflip > 0:
        steps.append(T.RandomHorizontalFlip(hflip))
    if auto_augment:
        steps.append(T.AutoAugment(T.AutoAugmentPolicy.IMAGENET))
    if color_jitter > 0:
        steps.append(T.ColorJitter(color_jitter, color_jitter, color_jitter))
    steps.append(T.ToTensor())
    if pca_lighting > 0:
        steps.append(Lighting(pca_lighting))
    steps.append(T.Normalize(mean, std))
    return T.Compose(steps)


def build_eval_transform(
    size: int, crop_pct: float = 0.875, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> T.Compose:
    """Resize the short side to ``int(size / crop_pct)``, centre-crop ``size``, normalise."""
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}.")
    return T.Compose([
        T.Resize(int(size / crop_pct), interpolation=interpolation_for(size)),
        T.CenterCrop(size),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def smooth_one_hot(labels: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """One-hot targets with ``smoothing`` spread uniformly: (N,) -> (N, num_classes)."""
    off = smoothing / num_classes
    return F.one_hot(labels, num_classes).float() * (1.0 - smoothing) + off


def mixup_batch(
    images: Tensor, labels: Tensor, num_classes: int, alpha: float, smoothing: float = 0.0
) -> Tuple[Tensor, Tensor]:
    """Mixup (Zhang et al. 2018) with the batch reversed as partner: returns images and soft targets.

    The mixing weight is drawn from Beta(alpha, alpha) with torch's global generator, so it
    is part of the random state a checkpoint saves; ``alpha == 0`` only applies label smoothing.
    """
    targets = smooth_one_hot(labels, num_classes, smoothing)
    if alpha <= 0:
        return images, targets
    beta = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha)))
    lam = float(beta.sample())
    return images.mul(lam).add_(images.flip(0), alpha=1.0 - lam), targets.mul(lam).add_(targets.flip(0), alpha=1.0 - lam)
