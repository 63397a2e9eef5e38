"""The detection loss of a batch and one COCO evaluation pass (the engine runs the loop).

Evaluation works in one process and under torchrun: it gathers every rank's detections before
COCOeval scores them, so every rank reports the numbers of the whole set.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from pycocotools.coco import COCO
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ...config.schemas import DetectConfig
from ...data.detection.dataset import DetectionDataset
from ...data.detection.layouts import build_detection_dataset
from ...data.detection.records import Target
from ...engine.runtime import autocast
from ...errors import DataError, DetectionDataError, UsageError
from .evaluation import CocoEvaluator, check_ground_truth

# What an unreadable evaluation image is scored with (``CocoEvaluator.update``'s format): nothing found.
NO_DETECTIONS = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}


def to_device(images: List[Tensor], targets: List[Target], device: torch.device) -> tuple:
    """Images and the tensors of each target on ``device`` (plain values such as ``image_id`` stay)."""
    moved = [
        {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in t.items()} for t in targets
    ]
    return [image.to(device, non_blocking=True) for image in images], moved


def detection_loss(
    model: nn.Module, images: List[Tensor], targets: List[Target], device: torch.device
) -> Tuple[Tensor, Dict[str, Union[Tensor, int]]]:
    """The summed detector losses of a batch (lists of (3, H, W) images in 0..1 and their targets) and
    their sums for the log: ``images`` (a host count), ``loss`` and each component (``loss_classifier``, ...)
    as device tensors, read by the loop only at log points (no host sync per step)."""
    images, targets = to_device(images, targets, device)
    losses = model(images, targets)
    loss = sum(value.float() for value in losses.values())
    count = len(images)
    sums = {k: v.detach().float() * count for k, v in losses.items()}
    return loss, dict(sums, loss=loss.detach() * count, images=count)


def evaluation_dataset(
    config: DetectConfig,
    classes: Sequence[str],
    data: Optional[str] = None,
    split: Optional[str] = None,
    annotations: Optional[str] = None,
    images: Optional[str] = None,
    skip_bad: bool = False,
) -> DetectionDataset:
    """A split of a run's data read as its evaluation reads it (without masks), its ground truth checked
    (``check_ground_truth``); each argument overrides the run's option (``split``: default its validation split).
    ``skip_bad``: a missing or unreadable image is kept in the ground truth and scored as found nothing (its
    objects missed) instead of being an error; never left out of the score.

    Raises:
        UsageError: no data folder (neither ``data`` nor the run's).
        DataError: the data set's classes are not the model's ``classes`` (background first).
    """
    data = data or config.data
    if not data:
        raise UsageError("--data is required: the run does not name its data folder.")
    dataset = build_detection_dataset(
        config.dataset,
        data,
        split or config.val_split,
        False,
        annotation_file=annotations or config.annotations,
        images=images or config.images,
        classes=classes[1:],
        skip_bad=skip_bad,
        with_masks=False,
    )
    check_ground_truth(dataset)
    if dataset.classes != list(classes):
        raise DataError(
            f"{data} has classes {dataset.classes[1:6]}... but the model was trained on {list(classes)[1:6]}...; "
            "evaluate on the data set it was trained for."
        )
    return dataset


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    evaluator: CocoEvaluator,
    device: torch.device,
    amp: str = "none",
    progress: bool = False,
    unreadable: str = "miss",
) -> Dict[str, Dict[str, float]]:
    """Detect on every image of ``loader`` (batches from ``collate_detection``), gather over ranks and
    score: ``{"bbox": {"AP", "AP50", ...}, "segm": {...}}`` in percent (see ``CocoEvaluator``).

    An image that cannot be read (``None`` beside its target, see ``DetectionDataset.__getitem__``) is never
    left out of the score: with ``unreadable="miss"`` it is scored with no detections, so its objects count as
    missed (and a warning names it); with ``"error"`` it stops the evaluation.

    Raises:
        DetectionDataError: an unreadable image with ``unreadable="error"``, naming the file.
    """
    if unreadable not in ("miss", "error"):
        raise UsageError(f"unreadable must be 'miss' or 'error', got {unreadable!r}.")
    was_training = model.training
    model.eval()
    try:
        for images, targets in tqdm(loader, desc="evaluate", disable=not progress, dynamic_ncols=True, leave=False):
            for target in (t for image, t in zip(images, targets) if image is None):
                if unreadable == "error":
                    raise DetectionDataError(
                        f"{target['unreadable']}; replace the file (an image left out would raise the AP)."
                    )
                warnings.warn(
                    f"{target['unreadable']}: scored with no detections ({len(target['labels'])} objects missed).",
                    stacklevel=2,
                )
                evaluator.update({target["image_id"]: NO_DETECTIONS})
            readable = [(image, target) for image, target in zip(images, targets) if image is not None]
            if not readable:
                continue
            with autocast(device, amp):
                outputs = model([image.to(device) for image, _ in readable])
            evaluator.update(
                {t["image_id"]: {k: v.float().cpu() for k, v in o.items()} for (_, t), o in zip(readable, outputs)}
            )
    finally:
        model.train(was_training)
    evaluator.gather()
    return evaluator.summarize()


def iou_types(model: nn.Module, coco_gt: COCO) -> Sequence[str]:
    """``("bbox", "segm")`` for mask models on ground truth with segmentations (COCO), else ``("bbox",)``
    (box-only models, and VOC's boxes)."""
    masks = getattr(model, "predicts_masks", None)  # an exported detector says so (deploy.evaluation)
    if masks is None:
        masks = getattr(model.roi_heads, "mask_predictor", None) is not None
    return ("bbox", "segm") if masks and any("segmentation" in a for a in coco_gt.anns.values()) else ("bbox",)


def format_metrics(metrics: Dict[str, Dict[str, Any]]) -> str:
    """``bbox AP 41.2 AP50 60.1 ... | segm AP ...`` for the log (``n/a`` for a score COCO cannot compute)."""
    return " | ".join(
        f"{kind} " + " ".join(f"{name} {'n/a' if value is None else f'{value:.1f}'}" for name, value in scores.items())
        for kind, scores in metrics.items()
    )
