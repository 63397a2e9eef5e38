"""Imbalanced data: a class-balanced training sampler and class weights for the loss, from label counts.

``WeightedSampler`` draws each pass's samples with probability proportional to a weight per sample (as
``torch.utils.data.WeightedRandomSampler`` does, with replacement), the same draw on every rank for a given
seed and pass. It has ``DistributedSampler``'s interface (``set_epoch``), so ``data.ResumableSampler`` shares it
between the ranks and resumes it as it does the plain shuffle. The weights come from

- ``inverse_frequency``: 1 / (images of the sample's class): every class is drawn equally often
  (classification's ``--balanced-sampler``);
- ``repeat_factors``: LVIS's repeat-factor sampling (Gupta et al. 2019, section 4; detectron2's
  ``RepeatFactorTrainingSampler``) for images holding several classes (detection's ``--balanced-sampler``).

``balanced_class_weights`` (inverse frequency, scikit-learn's ``"balanced"``) and ``median_frequency_weights``
(SegNet's median frequency balancing for pixels) weight the loss instead (``--class-weights auto``).
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from ..errors import DataError, UsageError


class WeightedSampler(Sampler[int]):
    """One pass's global order: ``num_samples`` indices drawn with replacement, index ``i`` with probability
    ``weights[i] / sum(weights)``.

    The draw of pass ``epoch`` is ``torch.multinomial`` under a generator seeded with ``seed + epoch``
    (``DistributedSampler``'s rule), so every rank draws the same order; ``data.ResumableSampler`` hands each
    rank its share of it and resumes it mid-pass, as it does the plain shuffle.

    Args:
        weights: (N,) non-negative weights of the data set's samples, not all zero.
        seed: the run's seed.
        num_samples: indices drawn per pass (default N: a pass is as long as an unweighted one).

    Raises:
        UsageError: negative, non-finite or all-zero weights.
    """

    def __init__(self, weights: Sequence[float], seed: int = 0, num_samples: int = 0) -> None:
        self.weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if self.weights.ndim != 1 or not torch.isfinite(self.weights).all() or (self.weights < 0).any():
            raise UsageError("sample weights must be one finite, non-negative number per sample.")
        if not self.weights.sum() > 0:
            raise UsageError("sample weights are all zero: no sample could be drawn.")
        self.seed, self.epoch, self.total = seed, 0, num_samples or len(self.weights)

    def set_epoch(self, epoch: int) -> None:
        """Draw pass ``epoch`` next."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.multinomial(self.weights, self.total, replacement=True, generator=generator).tolist())

    def __len__(self) -> int:
        return self.total


def class_counts(labels: Sequence[int], num_classes: int) -> np.ndarray:
    """(num_classes,) samples per class of ``labels`` (class ids 0..num_classes-1)."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes]


def inverse_frequency(labels: Sequence[int], num_classes: int) -> np.ndarray:
    """(N,) sampling weight of each sample: 1 / (samples of its class), so each class present is drawn with
    probability 1 / (classes present)."""
    counts = class_counts(labels, num_classes)
    return 1.0 / counts[np.asarray(labels, dtype=np.int64)]


def balanced_class_weights(counts: Sequence[int], where: str = "the training set") -> np.ndarray:
    """(C,) loss weight of each class: ``n / (C x n_c)`` for ``n`` samples, ``n_c`` of class ``c`` (scikit-learn's
    ``compute_class_weight("balanced")``): the weighted loss has the gradient, in expectation, of the plain loss
    on class-balanced data, and the weights average to 1 over the training samples, so the loss keeps its scale.

    Raises:
        DataError: a class without samples (no weight is defined for it), naming ``where``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    empty = np.flatnonzero(counts == 0).tolist()
    if empty:
        raise DataError(
            f"{where} has no sample of class(es) {empty[:10]}, so they have no inverse-frequency weight; "
            "add samples of every class or train without class weights."
        )
    return counts.sum() / (len(counts) * counts)


def median_frequency_weights(pixel_counts: np.ndarray) -> np.ndarray:
    """(C,) loss weight of each class for pixel labels: median frequency balancing (Eigen and Fergus 2015,
    section 4.1; SegNet's weights on CamVid): ``median(freq) / freq_c`` with ``freq_c`` the pixels of class ``c``
    over the pixels of the images where ``c`` occurs. A class that never occurs gets weight 0 (it is never a
    target).

    Args:
        pixel_counts: (images, C) labelled pixels of each class in each image (ignored pixels not counted).
    """
    counts = np.asarray(pixel_counts, dtype=np.float64)
    present = counts > 0
    image_pixels = counts.sum(1, keepdims=True)
    occurring = present.any(0)
    freq = np.zeros(counts.shape[1])
    freq[occurring] = counts.sum(0)[occurring] / (present * image_pixels).sum(0)[occurring]
    weights = np.zeros(counts.shape[1])
    weights[occurring] = np.median(freq[occurring]) / freq[occurring]
    return weights


def repeat_factors(image_classes: Sequence[Sequence[int]], threshold: float) -> np.ndarray:
    """(N,) repeat factor of each image (LVIS, Gupta et al. 2019, section 4; detectron2's
    ``RepeatFactorTrainingSampler.repeat_factors_from_category_frequency``): ``r(c) = max(1, sqrt(t / f(c)))``
    for the fraction ``f(c)`` of images holding class ``c`` and the threshold ``t``; an image's factor is the
    largest of its classes' (1 for an image without objects).

    Args:
        image_classes: the classes present in each image.
        threshold: ``t``: classes in fewer than this fraction of the images are repeated.
    """
    images = len(image_classes)
    if images == 0:
        raise DataError("repeat factors of an empty data set.")
    seen: dict = {}
    for classes in image_classes:
        for c in set(classes):
            seen[c] = seen.get(c, 0) + 1
    factor = {c: max(1.0, math.sqrt(threshold / (count / images))) for c, count in seen.items()}
    return np.array([max([factor[c] for c in set(classes)], default=1.0) for classes in image_classes])
