"""The detection loss of a batch and one COCO evaluation pass (the engine runs the loop).

Evaluation works in one process and under torchrun: it gathers every rank's detections before
COCOeval scores them, so every rank reports the numbers of the whole set.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

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
from ...errors import DataError, UsageError
from .evaluation import CocoEvaluator, check_ground_truth


def to_device(images: List[Tensor], targets: List[Target], device: torch.device) -> tuple:
    """Images and the tensors of each target on ``device`` (plain values such as ``image_id`` stay)."""
    moved = [
        {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in t.items()} for t in targets
    ]
    return [image.to(device, non_blocking=True) for image in images], moved


def detection_loss(
    model: nn.Module, images: List[Tensor], targets: List[Target], device: torch.device
) -> Tuple[Tensor, Dict[str, float]]:
    """The summed detector losses of a batch (lists of (3, H, W) images in 0..1 and their targets) and
    their sums for the log: ``images``, ``loss`` and each component (``loss_classifier``, ...)."""
    images, targets = to_device(images, targets, device)
    losses = model(images, targets)
    loss = sum(value.float() for value in losses.values())
    count = len(images)
    return loss, dict({k: v.item() * count for k, v in losses.items()}, loss=loss.item() * count, images=count)


def evaluation_dataset(
    config: DetectConfig,
    classes: Sequence[str],
    data: Optional[str] = None,
    split: Optional[str] = None,
    annotations: Optional[str] = None,
    images: Optional[str] = None,
) -> DetectionDataset:
    """A split of a run's data read as its evaluation reads it (without masks), its ground truth checked
    (``check_ground_truth``); each argument overrides the run's option (``split``: default its validation split).

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
        skip_bad=True,
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
) -> Dict[str, Dict[str, float]]:
    """Detect on every image of ``loader`` (batches from ``collate_detection``), gather over ranks and
    score: ``{"bbox": {"AP", "AP50", ...}, "segm": {...}}`` in percent (see ``CocoEvaluator``)."""
    was_training = model.training
    model.eval()
    try:
        for images, targets in tqdm(loader, desc="evaluate", disable=not progress, dynamic_ncols=True, leave=False):
            if not images:
                continue
            with autocast(device, amp):
                outputs = model([image.to(device) for image in images])
            evaluator.update(
                {t["image_id"]: {k: v.float().cpu() for k, v in o.items()} for t, o in zip(targets, outputs)}
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
