"""The classification loss of a micro-batch and one evaluation pass (the engine runs the loop).

Evaluation works in a single process and under torchrun: sums are all-reduced across ranks so
every rank reports the same global numbers; the per-sample predictions it can collect for the diagnostics are
gathered from every rank, in the data set's order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...config.schemas import ClassifyConfig
from ...data.classification import EVAL_SPLITS, digits_datasets, find_split, load_split
from ...data.transforms import mixup_batch
from ...engine.distributed import all_gather_object, all_reduce_sum
from ...engine.runtime import autocast
from ...errors import ConfigError, DataError, UsageError


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
    progress: Optional[Any] = None,
    unreadable: str = "miss",
    collect: bool = False,
) -> Dict[str, Any]:
    """One evaluation pass over ``loader`` (batches of ``collate_skip_bad``), over every rank under torchrun.

    An image that cannot be read is never left out of the accuracy: with ``unreadable="miss"`` it counts as
    a wrong answer (in ``images`` and ``bad_images``; the loss, undefined for it, averages the readable ones),
    with ``"error"`` it stops the evaluation.

    Args:
        model: the classifier (put in eval mode).
        loader: the evaluation batches; with ``collect``, a ``DataLoader`` whose ``batch_sampler`` gives
            each batch's positions (the plain loaders and ``engine.data.eval_loader`` do).
        device: where to compute.
        amp: mixed precision (``engine.runtime.AMP_DTYPES``).
        channels_last: feed the images in channels-last memory format.
        progress: a tqdm bar updated once per batch, or None.
        unreadable: ``"miss"`` or ``"error"`` (see above).
        collect: also return every readable sample's label and probabilities (the diagnostics' input).

    Returns:
        Global ``loss``, ``top1``, ``top5`` (in %), ``images`` and ``bad_images``; with ``collect``,
        ``predictions``: ``Predictions`` of the whole data set's readable samples, gathered from every rank.

    Raises:
        DataError: an unreadable image with ``unreadable="error"``, naming the file.
    """
    if unreadable not in ("miss", "error"):
        raise UsageError(f"unreadable must be 'miss' or 'error', got {unreadable!r}.")
    model.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    loss_sum, top1, top5, seen, bad_count = 0.0, 0, 0, 0, 0
    positions: List[int] = []
    labels_seen: List[Tensor] = []
    probabilities: List[Tensor] = []
    batches = iter(loader.batch_sampler) if collect else None
    for images, labels, bad in loader:
        if bad and unreadable == "error":
            raise DataError(f"image {bad[0]} cannot be read; replace or remove it (a file left out changes the score).")
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
    scored = seen + bad_count  # an unreadable image is a miss
    return dict(
        extra,
        loss=loss_sum / seen if seen else math.nan,
        top1=100.0 * top1 / scored if scored else math.nan,
        top5=100.0 * top5 / scored if scored else math.nan,
        images=int(scored),
        bad_images=int(bad_count),
    )
