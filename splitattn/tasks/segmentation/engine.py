"""One segmentation training epoch and one evaluation pass.

Both work in one process and under torchrun: the loss sums and the confusion matrix are
all-reduced, so every rank reports the numbers of the whole set.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ...data.segmentation import IGNORE_INDEX
from ...utils.distributed import all_reduce_sum
from ..classification.engine import NonFiniteLossError
from ...utils.run import TrainStep, autocast
from .inference import predict_probs
from .metrics import ConfusionMatrix
from .model import segmentation_loss


@dataclass
class SegmentationStep(TrainStep):
    """``TrainStep`` plus the auxiliary head's loss weight."""

    aux_weight: float = 0.2


def train_one_epoch(model: nn.Module, loader: DataLoader, step: SegmentationStep, progress: Optional[tqdm] = None) -> Dict[str, float]:
    """Train over ``loader`` once, one optimizer and poly-LR step per batch; returns the mean loss
    (over all ranks) and the images per second of this process."""
    model.train()
    loss_sum, batches, images, start = 0.0, 0, 0, time.perf_counter()
    for inputs, targets in loader:
        inputs = inputs.to(step.device, non_blocking=True)
        targets = targets.to(step.device, non_blocking=True)
        with autocast(step.device, step.amp):
            outputs = model(inputs)
        loss = segmentation_loss(outputs, targets, IGNORE_INDEX, step.aux_weight)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"the training loss became {loss.item()} at lr {step.optimizer.param_groups[0]['lr']:.3g}; "
                "lower --lr, or use --amp bf16/none instead of fp16.")
        step.apply(loss)
        loss_sum += loss.item()
        batches += 1
        images += inputs.shape[0]
        if progress is not None:
            progress.set_postfix(loss=f"{loss.item():.4f}")
            progress.update(1)
    total_loss, total_batches = all_reduce_sum([loss_sum, batches], step.device)
    elapsed = time.perf_counter() - start
    return {"loss": total_loss / max(1.0, total_batches), "images_per_sec": images / elapsed if elapsed > 0 else math.nan}


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
    ``predict_probs``; one confusion matrix summed over images and ranks."""
    was_training = model.training
    model.eval()
    confusion = ConfusionMatrix(num_classes, IGNORE_INDEX)
    count = 0
    try:
        for images, targets in tqdm(loader, desc="evaluate", disable=not progress, dynamic_ncols=True, leave=False):
            for image, target in zip(images, targets):
                with autocast(device, amp):
                    probs = predict_probs(model, image.to(device), scales, flip, base_size, crop_size)
                confusion.update(probs.argmax(0), target)
                count += 1
    finally:
        model.train(was_training)
    summed = all_reduce_sum(confusion.matrix.flatten().tolist() + [count], device)
    confusion.matrix = torch.tensor(summed[:-1], dtype=torch.float64).round().long().reshape(num_classes, num_classes)
    result = confusion.compute(class_names)
    result["images"] = int(summed[-1])
    return result
