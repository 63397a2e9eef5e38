"""The classification loss of a micro-batch and one evaluation pass (the engine runs the loop).

Evaluation works in a single process and under torchrun: sums are all-reduced across ranks so
every rank reports the same global numbers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...config.schemas import ClassifyConfig
from ...data.classification import EVAL_SPLITS, digits_datasets, find_split, load_split
from ...data.transforms import mixup_batch
from ...engine.distributed import all_reduce_sum
from ...engine.runtime import autocast
from ...errors import ConfigError, DataError


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy with per-class target probabilities (label smoothing, mixup): mean over the batch."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def accuracy_counts(logits: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> List[int]:
    """How many of ``labels`` are among the top-k ``logits`` for each k (k capped at the class count)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return [int(hits[:, :k].any(dim=1).sum()) for k in ks]


def classification_loss(
    model: nn.Module,
    batch: Tuple[Tensor, Tensor, List[str]],
    device: torch.device,
    num_classes: int,
    mixup_alpha: float = 0.0,
    label_smoothing: float = 0.0,
    channels_last: bool = False,
) -> Tuple[Tensor, Dict[str, float]]:
    """The loss of one micro-batch ``(images (B, 3, H, W), labels (B,), unreadable paths)`` with mixup and
    label smoothing, and its sums for the log: ``images``, ``loss``, ``top1`` (against each sample's
    dominant label, in %) and ``n_bad_images``."""
    images, labels, bad = batch
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images = images.to(device, non_blocking=True, memory_format=memory_format)
    labels = labels.to(device, non_blocking=True)
    inputs, targets = mixup_batch(images, labels, num_classes, mixup_alpha, label_smoothing)
    logits = model(inputs)
    loss = soft_cross_entropy(logits, targets)
    count = labels.shape[0]
    hits = int((logits.argmax(1) == targets.argmax(1)).sum())
    return loss, {"images": count, "loss": loss.item() * count, "top1": 100.0 * hits, "n_bad_images": len(bad)}


def evaluation_dataset(
    data: Union[str, Path, None],
    config: Optional[ClassifyConfig],
    transform: Any,
    classes: Optional[Sequence[str]],
    in_chans: int,
    num_classes: Optional[int] = None,
) -> Tuple[Any, Path]:
    """``(data set, its location)`` to evaluate a classifier on: ``data`` (a folder with val/ or test/, that
    split itself, or a .csv list) or the run's data (``config``), or for a run of the built-in digits its
    held-out split; images through ``transform``, labels numbered as ``classes`` (a run's) say.

    Raises:
        ConfigError: no data for bare weights (``config`` None).
        DataError: a data set whose class count differs from ``num_classes`` (bare weights; None: unchecked).
    """
    data = data or (config.data if config else None)
    if data:
        root = Path(data)
        has_split = root.is_dir() and any((root / s).exists() or (root / f"{s}.csv").exists() for s in EVAL_SPLITS)
        location = find_split(root, EVAL_SPLITS) if has_split else root  # else: the split folder or CSV itself
        dataset = load_split(location, transform, classes=classes, channels=in_chans)
    elif config is not None:  # a run of the built-in digits demo: its held-out split, as the run evaluated it
        _, dataset = digits_datasets(None, transform, channels=in_chans)
        location = Path("digits-test")
    else:
        raise ConfigError(
            "--data is required with bare weights: a folder with val/ or test/, the split itself, or a .csv list."
        )
    if classes is None and num_classes is not None and len(dataset.classes) != num_classes:
        raise DataError(
            f"{location} has {len(dataset.classes)} classes but the model has {num_classes}; "
            "its folders must be all the model's classes in label order."
        )
    return dataset, location


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device,
    amp: str = "none",
    channels_last: bool = False,
    progress=None,
    per_class: bool = False,
) -> Dict[str, Any]:
    """Global ``loss``, ``top1``, ``top5`` (in %), ``images`` and ``bad_images`` over ``loader``; with
    ``per_class`` also ``per_class_top1``: each class's top-1 (the share of its images classified as it, in %;
    None for a class without images)."""
    model.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    loss_sum, top1, top5, seen, bad_count = 0.0, 0, 0, 0, 0
    class_hits: List[int] = []
    class_seen: List[int] = []
    for images, labels, bad in loader:
        bad_count += len(bad)
        if progress is not None:
            progress.update(1)
        if labels.numel() == 0:
            continue
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        labels = labels.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(images)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").item()
        hits1, hits5 = accuracy_counts(logits, labels)
        top1, top5, seen = top1 + hits1, top5 + hits5, seen + labels.shape[0]
        if per_class:
            classes = logits.shape[1]
            correct = labels[logits.argmax(1) == labels].cpu()
            hits = torch.bincount(correct, minlength=classes).tolist()
            counts = torch.bincount(labels.cpu(), minlength=classes).tolist()
            class_hits = [a + b for a, b in zip(hits, class_hits or [0] * classes)]
            class_seen = [a + b for a, b in zip(counts, class_seen or [0] * classes)]
    summed = all_reduce_sum([loss_sum, top1, top5, seen, bad_count] + class_hits + class_seen, device)
    loss_sum, top1, top5, seen, bad_count = summed[:5]
    if seen == 0:
        return {"loss": math.nan, "top1": math.nan, "top5": math.nan, "images": 0, "bad_images": int(bad_count)}
    result: Dict[str, Any] = {
        "loss": loss_sum / seen,
        "top1": 100.0 * top1 / seen,
        "top5": 100.0 * top5 / seen,
        "images": int(seen),
        "bad_images": int(bad_count),
    }
    if per_class:
        hits, counts = summed[5 : 5 + len(class_hits)], summed[5 + len(class_hits) :]
        result["per_class_top1"] = [100.0 * h / c if c else None for h, c in zip(hits, counts)]
    return result
