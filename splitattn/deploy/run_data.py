"""A classification run's own images as tensors: calibration images for int8, validation images for scoring.

Calibration draws from the run's *training* split (the validation split stays unseen by the quantiser, so the
accuracy it reports is honest); both go through the run's *evaluation* preprocessing, which is what the
deployed model sees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..data.classification import EVAL_SPLITS, find_split, load_split
from ..data.transforms import eval_transform_for
from ..errors import DataError, UsageError
from ..models.eval_config import EvalConfig

TRAIN_SPLITS = ("train",)


def calibration_indices(total: int, count: int, seed: int = 0) -> Sequence[int]:
    """``count`` indices drawn without replacement from ``range(total)`` (all of them when fewer), sorted:
    the calibration images of a training split."""
    if count < 1:
        raise UsageError(f"--calibration-images must be at least 1, got {count}.")
    if count >= total:
        return range(total)
    return sorted(np.random.default_rng(seed).permutation(total)[:count].tolist())


def split_images(
    root: Union[str, Path],
    splits: Sequence[str],
    eval_config: EvalConfig,
    classes: Optional[Sequence[str]],
    in_chans: int,
    limit: Optional[int] = None,
    seed: int = 0,
) -> Tuple[Tensor, Tensor]:
    """``(images (N, C, S, S) float32, labels (N,))`` of the first of ``splits`` found under ``root``, through
    ``eval_config``'s transform; at most ``limit`` images, drawn at random (``seed``) when there are more.
    Unreadable images are left out.

    Raises:
        FileNotFoundError: ``root`` has none of ``splits``.
        DataError: no readable image.
    """
    location = find_split(root, splits)
    dataset = load_split(location, eval_transform_for(eval_config), classes=classes, channels=in_chans)
    indices = range(len(dataset)) if not limit else calibration_indices(len(dataset), limit, seed)
    images, labels = [], []
    for index in indices:
        image, label, _ = dataset[index]
        if image is not None:
            images.append(image)
            labels.append(label)
    if not images:
        raise DataError(f"no readable image in {location}.")
    return torch.stack(images), torch.tensor(labels)


def calibration_images(
    root: Union[str, Path], eval_config: EvalConfig, classes: Sequence[str], in_chans: int, count: int, seed: int = 0
) -> Tensor:
    """``count`` training images of a run (``root/train``) through its evaluation transform: (N, C, S, S)."""
    return split_images(root, TRAIN_SPLITS, eval_config, classes, in_chans, count, seed)[0]


def validation_images(
    root: Union[str, Path],
    eval_config: EvalConfig,
    classes: Sequence[str],
    in_chans: int,
    limit: Optional[int] = None,
) -> Tuple[Tensor, Tensor]:
    """The validation (or test) split of a run's data through its evaluation transform, with labels."""
    return split_images(root, EVAL_SPLITS, eval_config, classes, in_chans, limit)
