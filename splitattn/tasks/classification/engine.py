"""The classification loss of a micro-batch and one evaluation pass (the engine runs the loop).

Evaluation works in a single process and under torchrun: sums are all-reduced across ranks so
every rank reports the same global numbers; the per-sample predictions it can collect for the diagnostics are
gathered from every rank, in the data set's order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...data.transforms import mixup_batch
from ...engine.distributed import all_gather_object, all_reduce_sum
from ...engine.runtime import autocast


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


@dataclass
class Predictions:
    """What an evaluation predicted for each readable sample, in the data set's order.

    Attributes:
        positions: (N,) int64 indices of the samples in the evaluated data set (unreadable ones left out).
        labels: (N,) int64 true class ids.
        probabilities: (N, C) float32 softmax of the logits.
    """

    positions: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray


def readable_positions(dataset: Any, positions: Sequence[int], bad: Sequence[str]) -> List[int]:
    """The positions of one evaluation batch whose image was read.

    ``collate_skip_bad`` drops the unreadable samples of a batch and returns their paths in batch order; an
    evaluation set (``replace_bad`` off) reports each unreadable sample's own path, so walking the batch's
    positions and the ``bad`` paths together leaves out exactly the dropped samples (also when a path is
    listed twice).

    Args:
        dataset: the evaluated data set (its ``samples`` hold ``(path, label)`` when ``bad`` is not empty).
        positions: the batch's indices into ``dataset``, in batch order.
        bad: the batch's unreadable paths, in batch order.

    Returns:
        The positions of the samples that are in the batch's images and labels, in order.
    """
    pending = list(bad)
    kept = []
    for position in positions:
        if pending and dataset.samples[position][0] == pending[0]:
            pending.pop(0)
        else:
            kept.append(int(position))
    return kept


def _gathered(positions: List[int], labels: List[Tensor], probabilities: List[Tensor]) -> Predictions:
    """This rank's predictions merged with every other rank's, sorted by position."""
    local = None
    if positions:
        local = (np.asarray(positions, dtype=np.int64), torch.cat(labels).numpy(), torch.cat(probabilities).numpy())
    parts = [part for part in all_gather_object(local) if part is not None]
    if not parts:  # no readable sample anywhere
        return Predictions(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0), np.float32))
    merged = [np.concatenate([part[i] for part in parts]) for i in range(3)]
    order = np.argsort(merged[0], kind="stable")
    return Predictions(*(array[order] for array in merged))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device,
    amp: str = "none",
    channels_last: bool = False,
    progress=None,
    collect: bool = False,
) -> Dict[str, Any]:
    """One evaluation pass over ``loader`` (batches of ``collate_skip_bad``), over every rank under torchrun.

    Args:
        model: the classifier (put in eval mode).
        loader: the evaluation batches; with ``collect``, a ``DataLoader`` whose ``batch_sampler`` gives
            each batch's positions (the plain loaders and ``engine.data.eval_loader`` do).
        device: where to compute.
        amp: mixed precision (``engine.runtime.AMP_DTYPES``).
        channels_last: feed the images in channels-last memory format.
        progress: a tqdm bar updated once per batch, or None.
        collect: also return every readable sample's label and probabilities (the diagnostics' input).

    Returns:
        Global ``loss``, ``top1``, ``top5`` (in %), ``images`` and ``bad_images``; with ``collect``,
        ``predictions``: ``Predictions`` of the whole data set, gathered from every rank.
    """
    model.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    loss_sum, top1, top5, seen, bad_count = 0.0, 0, 0, 0, 0
    positions: List[int] = []
    labels_seen: List[Tensor] = []
    probabilities: List[Tensor] = []
    batches = iter(loader.batch_sampler) if collect else None
    for images, labels, bad in loader:
        bad_count += len(bad)
        if progress is not None:
            progress.update(1)
        if collect:
            positions += readable_positions(loader.dataset, next(batches), bad)
        if labels.numel() == 0:
            continue
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        labels = labels.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(images)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").item()
        hits1, hits5 = accuracy_counts(logits, labels)
        top1, top5, seen = top1 + hits1, top5 + hits5, seen + labels.shape[0]
        if collect:
            labels_seen.append(labels.cpu())
            probabilities.append(logits.float().softmax(-1).cpu())
    if collect and len(positions) != sum(len(batch) for batch in labels_seen):
        raise RuntimeError(
            f"{len(positions)} sample positions for {sum(len(b) for b in labels_seen)} evaluated samples: the data "
            "set and its loader do not pair (each unreadable sample must be reported by its own path)."
        )
    extra: Dict[str, Any] = {}
    if collect:
        extra["predictions"] = _gathered(positions, labels_seen, probabilities)
    loss_sum, top1, top5, seen, bad_count = all_reduce_sum([loss_sum, top1, top5, seen, bad_count], device)
    if seen == 0:
        return dict(extra, loss=math.nan, top1=math.nan, top5=math.nan, images=0, bad_images=int(bad_count))
    return dict(
        extra,
        loss=loss_sum / seen,
        top1=100.0 * top1 / seen,
        top5=100.0 * top5 / seen,
        images=int(seen),
        bad_images=int(bad_count),
    )
