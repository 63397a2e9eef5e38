"""The ResNeSt recipe's image transforms and batch mixing.

Training: random-resized crop, horizontal flip, AutoAugment (ImageNet policy), colour
jitter, PCA lighting noise (AlexNet), normalisation. Evaluation: resize the short side to
``crop / crop_pct``, centre-crop; bicubic from 320 px up, as the published models do.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from ..models.registry import IMAGENET_MEAN, IMAGENET_STD

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
    """AlexNet-style PCA lighting noise on a (3, H, W) tensor in [0, 1]: add ``eigvec @ (alpha * eigval)``.

    ``alpha`` ~ N(0, ``std``) per image, drawn from torch's generator.
    """

    def __init__(self, std: float, eigval: Sequence[float] = IMAGENET_EIGVAL,
                 eigvec: Sequence[Sequence[float]] = IMAGENET_EIGVEC) -> None:
        self.std = std
        self.eigval = torch.tensor(eigval)
        self.eigvec = torch.tensor(eigvec)

    def __call__(self, image: Tensor) -> Tensor:
        if self.std == 0:
            return image
        alpha = torch.randn(3) * self.std
        rgb = self.eigvec @ (alpha * self.eigval)
        return image + rgb.view(3, 1, 1)

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
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> T.Compose:
    """Training pipeline; ``augment=False`` gives the deterministic evaluation pipeline instead."""
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
