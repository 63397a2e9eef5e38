"""The classification loss of a micro-batch and one evaluation pass (the engine runs the loop).

Evaluation works in a single process and under torchrun: sums are all-reduced across ranks so
every rank reports the same global numbers.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...data.transforms import mixup_batch
from ...engine.distributed import all_reduce_sum
from ...engine.runtime import autocast
from ...errors import DataError, UsageError


def soft_cross_entropy(logits: Tensor, targets: Tensor, weight: Optional[Tensor] = None) -> Tensor:
    """Cross-entropy with per-class target probabilities (label smoothing, mixup): mean over the batch.

    With ``weight`` (C,), class ``c``'s term counts ``weight[c]`` times and the mean is over the weights of the
    targets, ``sum_i sum_c w_c t_ic (-log p_ic) / sum_i sum_c w_c t_ic``: for one-hot targets exactly
    ``F.cross_entropy(logits, labels, weight=weight)``.

    Shape: logits (N, C), targets (N, C) rows summing to 1 -> a scalar.
    """
    log_probs = F.log_softmax(logits.float(), dim=-1)
    if weight is None:
        return torch.sum(-targets * log_probs, dim=-1).mean()
    weighted = targets * weight.to(log_probs)
    return torch.sum(-weighted * log_probs) / weighted.sum()


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
    class_weights: Optional[Tensor] = None,
) -> Tuple[Tensor, Dict[str, Union[Tensor, int]]]:
    """The loss of one micro-batch ``(images (B, 3, H, W), labels (B,), unreadable paths)`` with mixup,
    label smoothing and optionally ``class_weights`` (C,) (``soft_cross_entropy``), and its sums for the log:
    ``images`` and ``n_bad_images`` (host counts), ``loss`` and ``top1`` (against each sample's dominant label,
    in %) as device tensors, read by the loop only at log points (no host sync per step)."""
    images, labels, bad = batch
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images = images.to(device, non_blocking=True, memory_format=memory_format)
    labels = labels.to(device, non_blocking=True)
    inputs, targets = mixup_batch(images, labels, num_classes, mixup_alpha, label_smoothing)
    logits = model(inputs)
    loss = soft_cross_entropy(logits, targets, class_weights)
    count = labels.shape[0]
    hits = (logits.detach().argmax(1) == targets.argmax(1)).sum()
    return loss, {"images": count, "loss": loss.detach() * count, "top1": 100.0 * hits, "n_bad_images": len(bad)}


def require_readable(result: Dict[str, float], dataset: Any, where: str) -> None:
    """Raise when an evaluation over ``dataset`` (an ``ImageListDataset``) could read none of its images,
    naming why, counted by kind: its scores would be NaN.

    Raises:
        DataError: every image ``result`` (``evaluate``'s) scored was unreadable.
    """
    if result["bad_images"] and result["bad_images"] == result["images"]:
        paths = [path for path, _ in dataset.samples]
        raise DataError(f"none of the {len(paths)} images of {where} can be read: {dataset.unreadable(paths)}.")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device,
    amp: str = "none",
    channels_last: bool = False,
    progress=None,
    unreadable: str = "miss",
) -> Dict[str, float]:
    """Global ``loss``, ``top1``, ``top5`` (in %), ``images`` and ``bad_images`` over ``loader`` (batches from
    ``data.classification.collate_skip_bad``).

    An image that cannot be read is never left out of the accuracy: with ``unreadable="miss"`` it counts as
    a wrong answer (in ``images`` and ``bad_images``; the loss, undefined for it, averages the readable ones),
    with ``"error"`` it stops the evaluation.

    Raises:
        DataError: an unreadable image with ``unreadable="error"``, naming the file.
    """
    if unreadable not in ("miss", "error"):
        raise UsageError(f"unreadable must be 'miss' or 'error', got {unreadable!r}.")
    model.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    loss_sum, top1, top5, seen, bad_count = 0.0, 0, 0, 0, 0
    for images, labels, bad in loader:
        if bad and unreadable == "error":
            raise DataError(f"image {bad[0]} cannot be read; replace or remove it (a file left out changes the score).")
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
    loss_sum, top1, top5, seen, bad_count = all_reduce_sum([loss_sum, top1, top5, seen, bad_count], device)
    scored = seen + bad_count  # an unreadable image is a miss
    return {
        "loss": loss_sum / seen if seen else math.nan,
        "top1": 100.0 * top1 / scored if scored else math.nan,
        "top5": 100.0 * top5 / scored if scored else math.nan,
        "images": int(scored),
        "bad_images": int(bad_count),
    }
