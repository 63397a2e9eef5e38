"""One segmentation evaluation pass (the loss of a training batch is ``model.segmentation_loss``).

It works in one process and under torchrun: the loss sums and the confusion matrix are all-reduced,
so every rank reports the numbers of the whole set.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ...config.schemas import SegmentConfig
from ...data.segmentation.datasets import SegmentationDataset
from ...data.segmentation.label_maps import IGNORE_INDEX
from ...data.segmentation.layouts import build_dataset
from ...data.segmentation.transforms import SegmentationEvalTransform
from ...engine.distributed import all_reduce_sum
from ...engine.runtime import autocast
from ...errors import DataError, UsageError
from .inference import predict_probs
from .metrics import ConfusionMatrix


def evaluation_dataset(
    config: SegmentConfig,
    classes: Sequence[str],
    data: Optional[str] = None,
    split: Optional[str] = None,
    kind: Optional[str] = None,
    ignore_value: Optional[int] = None,
    skip_bad: bool = False,
) -> SegmentationDataset:
    """A split of a run's data read as its validation reads it (full-size normalised images, training ids);
    each argument overrides the run's option (``split``: default its validation split).

    Raises:
        UsageError: no data folder (neither ``data`` nor the run's).
        DataError: the data set's classes are not the model's ``classes``.
    """
    data = data or config.data
    if not data:
        raise UsageError("--data is required: the run does not name its data folder.")
    channels = config.in_chans
    dataset = build_dataset(
        kind or config.dataset,
        data,
        split or config.val_split,
        SegmentationEvalTransform(channels=channels),
        classes=None if config.palette else classes,
        ignore_value=ignore_value if ignore_value is not None else config.ignore_value,
        skip_bad=skip_bad,
        channels=channels,
        palette=config.palette,
    )
    if dataset.classes != list(classes):
        raise DataError(
            f"{data} has classes {dataset.classes[:5]}... but the model was trained on {list(classes)[:5]}...; "
            "evaluate on the data set it was trained for."
        )
    return dataset


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    device: torch.device,
    class_names: Optional[Sequence[str]] = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    base_size: Optional[int] = None,
    crop_size: Optional[int] = None,
    amp: str = "none",
    progress: bool = False,
) -> Dict[str, Any]:
    """Pixel accuracy, mIoU and per-class IoU over every image of ``loader`` (batches of
    ``(list of (3, H, W) images, list of (H, W) targets)``), predicted at full size with
    ``predict_probs``; one confusion matrix summed over images and ranks. ``loss``: the mean negative
    log-probability of the true class over the labelled pixels (the validation cross-entropy). ``confusion``:
    the summed ``ConfusionMatrix`` (for the diagnostics; not JSON, drop it before writing the result)."""
    was_training = model.training
    model.eval()
    confusion = ConfusionMatrix(num_classes, IGNORE_INDEX)
    count, nll_sum, labelled = 0, 0.0, 0
    try:
        for images, targets in tqdm(loader, desc="evaluate", disable=not progress, dynamic_ncols=True, leave=False):
            for image, target in zip(images, targets):
                with autocast(device, amp):
                    probs = predict_probs(model, image.to(device), scales, flip, base_size, crop_size)
                confusion.update(probs.argmax(0), target)
                valid = target != IGNORE_INDEX
                if valid.any():
                    picked = probs.float().gather(0, target.clamp(0, num_classes - 1).to(probs.device)[None])[0]
                    nll_sum -= picked[valid.to(probs.device)].clamp_min(1e-12).log().sum().item()
                    labelled += int(valid.sum())
                count += 1
    finally:
        model.train(was_training)
    summed = all_reduce_sum(confusion.matrix.flatten().tolist() + [count, nll_sum, labelled], device)
    confusion.matrix = torch.tensor(summed[:-3], dtype=torch.float64).round().long().reshape(num_classes, num_classes)
    result = confusion.compute(class_names)
    result["images"] = int(summed[-3])
    result["loss"] = summed[-2] / summed[-1] if summed[-1] else float("nan")
    result["confusion"] = confusion
    return result
