"""Pixel accuracy and mean IoU from one confusion matrix accumulated over the whole evaluation set.

Accumulating counts over every pixel of every image and dividing once at the end is the
standard (PyTorch-Encoding, mmsegmentation) definition; averaging per-image scores would
weight small images like large ones and give a different number.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from ...errors import DataError, UsageError


class ConfusionMatrix:
    """(K, K) int64 counts, rows = ground-truth class, columns = predicted class.

    Pixels whose target is ``ignore_index`` are left out. A target outside ``0..K-1`` that is not
    the ignore label, or a prediction outside ``0..K-1``, is an error (a wrong class count).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise UsageError(f"num_classes must be positive, got {num_classes}.")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, prediction: Tensor, target: Tensor) -> None:
        """Add the pixels of ``prediction`` and ``target`` (same shape, integer class ids)."""
        if prediction.shape != target.shape:
            raise UsageError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape.")
        prediction = prediction.reshape(-1).long().cpu()
        target = target.reshape(-1).long().cpu()
        keep = target != self.ignore_index
        prediction, target = prediction[keep], target[keep]
        k = self.num_classes
        if target.numel() and (target.min() < 0 or target.max() >= k):
            bad = target[(target < 0) | (target >= k)].unique()[:10].tolist()
            raise DataError(f"target holds {bad}: not class ids 0..{k - 1} nor the ignore label {self.ignore_index}.")
        if prediction.numel() and (prediction.min() < 0 or prediction.max() >= k):
            raise UsageError(f"predictions must be class ids 0..{k - 1}; got values up to {int(prediction.max())}.")
        self.matrix += torch.bincount(target * k + prediction, minlength=k * k).reshape(k, k)

    def reset(self) -> None:
        self.matrix.zero_()

    def compute(self, class_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """Scores from the accumulated counts.

        ``pixel_acc``: correct / labelled pixels. ``iou[c]`` = TP / (TP + FP + FN); a class absent from
        both the targets and the predictions has no IoU (None) and is left out of ``miou``, the mean
        over the others (as in mmsegmentation). ``class_acc[c]`` = TP / ground-truth pixels of c.
        Percentages throughout.
        """
        matrix = self.matrix.double()
        true_positive = matrix.diag()
        gt_pixels = matrix.sum(1)
        predicted = matrix.sum(0)
        union = gt_pixels + predicted - true_positive
        total = float(matrix.sum())
        ious = [float(tp / u) * 100 if u > 0 else None for tp, u in zip(true_positive.tolist(), union.tolist())]
        accs = [float(tp / g) * 100 if g > 0 else None for tp, g in zip(true_positive.tolist(), gt_pixels.tolist())]
        present = [iou for iou in ious if iou is not None]
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise UsageError(f"{len(names)} class names for {self.num_classes} classes.")
        per_class: List[Dict[str, Any]] = [
            {"id": i, "name": names[i], "iou": ious[i], "acc": accs[i], "pixels": int(gt_pixels[i])}
            for i in range(self.num_classes)
        ]
        return {
            "pixel_acc": float(true_positive.sum()) / total * 100 if total > 0 else math.nan,
            "miou": sum(present) / len(present) if present else math.nan,
            "mean_class_acc": _mean(accs),
            "labelled_pixels": int(total),
            "per_class": per_class,
        }


def _mean(values: Sequence[Optional[float]]) -> float:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else math.nan


def format_iou_table(per_class: Sequence[Dict[str, Any]]) -> str:
    """A plain-text table of the per-class IoU and accuracy (percent), one class a line."""
    width = max([5] + [len(str(row["name"])) for row in per_class])
    lines = [f"{'id':>3}  {'class':<{width}}  {'IoU':>6}  {'acc':>6}  {'pixels':>10}"]
    for row in per_class:
        iou = "-" if row["iou"] is None else f"{row['iou']:6.2f}"
        acc = "-" if row["acc"] is None else f"{row['acc']:6.2f}"
        lines.append(f"{row['id']:>3}  {row['name']:<{width}}  {iou:>6}  {acc:>6}  {row['pixels']:>10}")
    return "\n".join(lines)
