"""The ResNeSt recipe's image transforms and batch mixing.

Training: random-resized crop, horizontal flip, AutoAugment (ImageNet policy), colour
jitter, PCA lighting noise (AlexNet), normalisation. Evaluation: the protocol of the
weights (``EvalConfig``): the authors' crop-then-resize for the official checkpoints,
timm's resize-then-crop for the timm hub copies and for runs trained here.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ..errors import UsageError
from ..models.eval_config import EvalConfig
from .io import normalisation

# PCA of ImageNet RGB pixels (AlexNet, Krizhevsky et al. 2012), pixel values in [0, 1].
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
# Training crops: bicubic from 320 px up, bilinear below (the recipe's training setting).
TRAIN_BICUBIC_FROM = 320


def interpolation_for(size: int) -> InterpolationMode:
    """Interpolation of the training random-resized crop: bicubic from 320 px up, bilinear below."""
    return InterpolationMode.BICUBIC if size >= TRAIN_BICUBIC_FROM else InterpolationMode.BILINEAR


class Lighting:
    """AlexNet-style PCA lighting noise on a (C, H, W) tensor in [0, 1]: add ``eigvec @ (alpha * eigval)``.

    ``alpha`` ~ N(0, ``std``) per image, drawn from torch's generator. The RGB shift goes to the first three
    channels (a fourth, alpha, is left as it is); a single-channel image gets the shift's mean (its luminance
    part, a brightness change). Raises ``ValueError`` for other channel counts.
    """

    def __init__(
        self, std: float, eigval: Sequence[float] = IMAGENET_EIGVAL, eigvec: Sequence[Sequence[float]] = IMAGENET_EIGVEC
    ) -> None:
        self.std = std
        self.eigval = torch.tensor(eigval)
        self.eigvec = torch.tensor(eigvec)

    def __call__(self, image: Tensor) -> Tensor:
        if self.std == 0:
            return image
        if image.shape[0] not in (1, 3, 4):
            raise UsageError(f"PCA lighting is for images of 1, 3 or 4 channels, got {image.shape[0]}.")
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
    crop_pct: float = EvalConfig.crop_pct,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    channels: int = 3,
) -> T.Compose:
    """Training pipeline for PIL images of ``channels`` channels (1, 3 or 4: the model's ``in_chans``);
    ``mean``/``std`` default to ``channel_stats(channels)`` (ImageNet's for RGB). ``augment=False`` gives the
    deterministic evaluation pipeline instead. Raises ``ValueError`` for AutoAugment on 4 channels (its
    colour operations are defined for 1 and 3)."""
    mean, std = normalisation(channels, mean, std)
    if auto_augment and augment and channels == 4:
        raise UsageError(
            "AutoAugment is defined for 1- and 3-channel images, not 4; turn it off (auto_augment: "
            "false, --no-auto-augment) to train a 4-channel model."
        )
    if not augment:
        return build_eval_transform(size, crop_pct, mean=mean, std=std)
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


class CenterCropResize(nn.Module):
    """The authors' evaluation crop (``ECenterCrop`` of zhanghang1989/ResNeSt ``scripts/torch/verify.py``).

    Keeps a centred square of ``crop_pct * short side`` pixels (the box rounded to whole pixels
    as PIL's ``Image.crop`` rounds it), then resizes it to ``size x size``. PIL image in, PIL
    image out (tensors (..., H, W) work too, through torchvision's ``resized_crop``).
    """

    def __init__(
        self, size: int, crop_pct: float, interpolation: InterpolationMode = InterpolationMode.BICUBIC
    ) -> None:
        super().__init__()
        self.size, self.crop_pct, self.interpolation = int(size), float(crop_pct), interpolation

    def forward(self, image: Union[Image.Image, Tensor]) -> Union[Image.Image, Tensor]:
        height, width = TF.get_image_size(image)[::-1]
        crop = self.crop_pct * min(height, width)
        top, left = round((height - crop) / 2), round((width - crop) / 2)
        bottom, right = round(top + crop), round(left + crop)
        return TF.resized_crop(
            image, top, left, bottom - top, right - left, [self.size, self.size], self.interpolation, antialias=True
        )

    def extra_repr(self) -> str:
        return f"size={self.size}, crop_pct={self.crop_pct:.4f}, interpolation={self.interpolation.value}"


def build_eval_transform(
    size: int,
    crop_pct: float = EvalConfig.crop_pct,
    interpolation: str = EvalConfig.interpolation,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    crop_mode: str = EvalConfig.crop_mode,
    channels: int = 3,
) -> T.Compose:
    """Evaluation pipeline, PIL image of ``channels`` channels -> float tensor (``channels``, ``size``, ``size``),
    normalised by ``mean``/``std`` (default ``channel_stats(channels)``: ImageNet's for RGB).

    ``crop_mode="center"`` (timm's, the default for runs trained here): resize the short side
    to ``floor(size / crop_pct)``, centre-crop ``size``. ``crop_mode="crop_resize"`` (the
    authors'): crop ``crop_pct`` of the short side, resize to ``size``. See ``EvalConfig``;
    invalid values raise ``ValueError`` naming them.
    """
    mean, std = normalisation(channels, mean, std)
    config = EvalConfig(size, crop_pct, interpolation, tuple(mean), tuple(std), crop_mode)
    mode = InterpolationMode(config.interpolation)
    if config.crop_mode == "crop_resize":
        geometry: list = [CenterCropResize(size, config.crop_pct, mode)]
    else:
        geometry = [T.Resize(math.floor(size / config.crop_pct), interpolation=mode), T.CenterCrop(size)]
    return T.Compose([*geometry, T.ToTensor(), T.Normalize(config.mean, config.std)])


def eval_transform_for(config: EvalConfig) -> T.Compose:
    """The evaluation pipeline of an ``EvalConfig`` (see ``build_eval_transform``); images get as many channels
    as ``config.mean`` has values."""
    return build_eval_transform(
        config.input_size,
        config.crop_pct,
        config.interpolation,
        config.mean,
        config.std,
        config.crop_mode,
        channels=len(config.mean),
    )


def create_eval_transform(model: Union[str, nn.Module], **overrides: Any) -> T.Compose:
    """The transform ``splitattn evaluate`` uses for ``model``: PIL image -> float tensor (3, S, S).

    ``model`` is a registered name or alias (its default weights' protocol: the authors' for
    the official files and models without weights, timm's for hub-only weights such as
    ResNeSt-14/26) or a model from ``create_model`` (its ``eval_config``, which follows the
    weights it was loaded with). ``overrides`` replace ``EvalConfig`` fields (``input_size``
    keeps the protocol, see ``EvalConfig.at_size``). Raises ``ValueError`` for an unknown name
    and ``TypeError`` for a module without ``eval_config``.
    """
    if isinstance(model, str):
        from ..weights.sources import default_eval_config

        config = default_eval_config(model)
    elif isinstance(getattr(model, "eval_config", None), EvalConfig):
        config = model.eval_config
    else:
        raise TypeError(
            f"create_eval_transform needs a registered model name or a model from create_model "
            f"(which carries eval_config), got {type(model).__name__}."
        )
    if "input_size" in overrides:
        config = config.at_size(overrides.pop("input_size"))
    return eval_transform_for(replace(config, **overrides))


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
    return images.mul(lam).add_(images.flip(0), alpha=1.0 - lam), targets.mul(lam).add_(
        targets.flip(0), alpha=1.0 - lam
    )
