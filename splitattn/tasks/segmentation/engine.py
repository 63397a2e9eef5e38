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

from ...data.segmentation.label_maps import IGNORE_INDEX
from ...engine.distributed import all_reduce_sum
from ...engine.runtime import autocast
from .inference import predict_probs
from .metrics import ConfusionMatrix


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
