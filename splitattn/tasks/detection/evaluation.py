"""COCO-style detection scores: model outputs -> COCO results json -> pycocotools ``COCOeval``.

The official scorer is run rather than reimplemented, so the numbers are the ones published
for COCO (and, with difficult objects as crowd regions, for VOC in COCO's metric). Scores are
percentages (AP 100 = perfect), as in the segmentation metrics; a score COCOeval cannot define
(its -1: no ground truth in that area range, e.g. no small objects) is ``None``, so ``metrics.json``
stays strict JSON (``null``), never NaN.

Only images passed to ``update`` are scored (torchvision's references and detectron2 do the
same), so evaluating a subset is correct; an image with no detections must still be passed,
with empty tensors, so that its objects count as missed.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

from ...data.detection.dataset import DetectionDataset
from ...engine.distributed import all_gather_object
from ...errors import DetectionDataError, UsageError

IOU_TYPES = ("bbox", "segm")
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # the first six entries of COCOeval.stats
MASK_THRESHOLD = 0.5
DRY_RUN_IMAGES = 32  # evaluation sets: the ground truth of the first images is scored on itself when built
COCO_MAX_DETECTIONS = 100  # COCOeval's maxDets: an image with more objects cannot reach AP 100


class CocoEvaluator:
    """Collects detections per image and scores them against ``coco_gt`` with ``COCOeval``.

    ``iou_types``: ``("bbox",)`` or ``("bbox", "segm")`` (the latter needs masks in the outputs and
    segmentations in the ground truth). ``contiguous_to_coco`` maps the model's labels 1..K to the
    ground truth's category ids (the data set's ``contiguous_to_coco``).
    """

    def __init__(self, coco_gt: COCO, iou_types: Sequence[str], contiguous_to_coco: Mapping[int, int]) -> None:
        unknown = [t for t in iou_types if t not in IOU_TYPES]
        if unknown or not iou_types:
            raise UsageError(f"iou_types must be a non-empty selection of {IOU_TYPES}, got {tuple(iou_types)}.")
        if "segm" in iou_types and not any("segmentation" in ann for ann in coco_gt.anns.values()):
            raise UsageError(
                "the ground truth has no segmentations (e.g. VOC boxes); evaluate with iou_types=('bbox',)."
            )
        self.coco_gt = coco_gt
        self.iou_types = tuple(iou_types)
        self.contiguous_to_coco = dict(contiguous_to_coco)
        self.predictions: Dict[int, List[Dict[str, Any]]] = {}
        self.notes: List[str] = []
        self.reports: Dict[str, str] = {}
        self.per_class: Dict[str, Dict[str, Optional[float]]] = {}

    def update(self, outputs: Mapping[int, Mapping[str, Tensor]]) -> None:
        """Add the detections of some images: ``{image_id: {"boxes": float [N, 4] x1 y1 x2 y2 in the
        original image's pixels, "scores": [N], "labels": int64 [N] contiguous 1..K, "masks": [N, 1, H, W]
        or [N, H, W] probabilities or 0/1 at the original size (needed for "segm")}}``.

        An image passed again replaces its earlier detections.
        """
        for image_id, output in outputs.items():
            image_id = int(image_id)
            if image_id not in self.coco_gt.imgs:
                raise UsageError(
                    f"image id {image_id} is not in the ground truth; pass target['image_id'] of the "
                    "evaluation data set."
                )
            self.predictions[image_id] = self._to_coco(image_id, output)

    def _to_coco(self, image_id: int, output: Mapping[str, Tensor]) -> List[Dict[str, Any]]:
        """COCO result dicts (``bbox`` x y w h, ``category_id``, ``score``, ``segmentation`` RLE with str counts)."""
        boxes = output["boxes"].detach().cpu().double().reshape(-1, 4)
        xywh = boxes.clone()
        xywh[:, 2:] = boxes[:, 2:] - boxes[:, :2]
        labels = output["labels"].detach().cpu().tolist()
        scores = output["scores"].detach().cpu().tolist()
        if not len(labels) == len(scores) == len(xywh):
            raise UsageError(f"image {image_id}: {len(xywh)} boxes, {len(scores)} scores and {len(labels)} labels.")
        bad = sorted({label for label in labels if label not in self.contiguous_to_coco})
        if bad:
            raise UsageError(
                f"image {image_id}: labels {bad[:10]} are not the data set's contiguous ids 1.."
                f"{len(self.contiguous_to_coco)}; the model must have {len(self.contiguous_to_coco) + 1} "
                "classes (with the background)."
            )
        results = [
            {"image_id": image_id, "category_id": self.contiguous_to_coco[label], "bbox": box, "score": score}
            for label, box, score in zip(labels, xywh.tolist(), scores)
        ]
        if "segm" in self.iou_types and results:
            for result, rle in zip(results, self._encode_masks(image_id, output)):
                result["segmentation"] = rle
        return results

    def _encode_masks(self, image_id: int, output: Mapping[str, Tensor]) -> List[Dict[str, Any]]:
        if "masks" not in output:
            raise UsageError(f"image {image_id}: 'segm' evaluation needs 'masks' in the outputs.")
        masks = output["masks"].detach()
        if masks.dim() == 4:
            masks = masks[:, 0]
        info = self.coco_gt.imgs[image_id]
        if tuple(masks.shape[1:]) != (info["height"], info["width"]):
            raise UsageError(
                f"image {image_id}: masks are {tuple(masks.shape[1:])} but the image is "
                f"{(info['height'], info['width'])}; paste masks at the original image size."
            )
        binary = (masks > MASK_THRESHOLD).cpu().numpy().astype(np.uint8)
        rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
        return [{"size": rle["size"], "counts": rle["counts"].decode("ascii")} for rle in rles]

    def gather(self) -> None:
        """Merge the detections of every process into each (no-op in a single process). An image scored
        by several processes (DistributedSampler repeats images to even out the shards) keeps the first."""
        merged: Dict[int, List[Dict[str, Any]]] = {}
        for part in all_gather_object(self.predictions):
            for image_id, results in part.items():
                merged.setdefault(image_id, results)
        self.predictions = merged

    @property
    def results(self) -> List[Dict[str, Any]]:
        """Every detection as a COCO result dict, ordered by image id."""
        return [result for image_id in sorted(self.predictions) for result in self.predictions[image_id]]

    def write_results(self, path: Union[str, Path]) -> Path:
        """Write ``results`` as the COCO results json (what the COCO evaluation server takes)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.results))
        return path

    def summarize(self) -> Dict[str, Dict[str, Optional[float]]]:
        """``{iou_type: {"AP", "AP50", "AP75", "APs", "APm", "APl"}}`` in percent, over the images passed to
        ``update``; ``None`` where COCOeval cannot compute a score (no ground truth in that area range).
        COCOeval's printed table is kept in ``reports[iou_type]``. Without any detection the scores are 0
        and ``notes`` says why (COCOeval cannot load an empty result list). Call it after ``gather`` (on
        the main process, when distributed). ``per_class[iou_type]`` then holds each category's AP (IoU
        0.50:0.95, all areas, 100 detections; ``None`` for a category without ground truth), by name."""
        results = self.results
        self.notes, self.reports, self.per_class = [], {}, {}
        if not results:
            self.notes.append(f"no detections on the {len(self.predictions)} evaluated images: every score is 0.")
            for iou_type in self.iou_types:
                self.per_class[iou_type] = {category["name"]: 0.0 for category in self.coco_gt.cats.values()}
            return {iou_type: {name: 0.0 for name in STAT_NAMES} for iou_type in self.iou_types}
        scores = {}
        for iou_type in self.iou_types:
            drop = "segmentation" if iou_type == "bbox" else "bbox"  # loadRes takes areas from what is left
            detections = [{k: v for k, v in result.items() if k != drop} for result in results]
            with contextlib.redirect_stdout(io.StringIO()) as text:
                coco_eval = COCOeval(self.coco_gt, self.coco_gt.loadRes(detections), iou_type)
                coco_eval.params.imgIds = sorted(self.predictions)
                coco_eval.evaluate()
                coco_eval.accumulate()
                start = text.tell()
                coco_eval.summarize()
            self.reports[iou_type] = text.getvalue()[start:]
            self.per_class[iou_type] = category_ap(coco_eval)
            scores[iou_type] = {
                name: float(value) * 100 if value >= 0 else None for name, value in zip(STAT_NAMES, coco_eval.stats)
            }
        return scores


def category_ap(coco_eval: COCOeval) -> Dict[str, Optional[float]]:
    """Each category's AP in percent from an accumulated ``COCOeval``: its precision averaged over the IoU
    thresholds and recall points, all areas, the last ``maxDets`` (what ``stats[0]`` averages over the
    categories); ``None`` for a category without ground truth among the evaluated images."""
    precision = coco_eval.eval["precision"][:, :, :, 0, -1]  # [IoU, recall, category] at area "all", 100 dets
    scores = {}
    for index, category_id in enumerate(coco_eval.params.catIds):
        values = precision[:, :, index]
        values = values[values > -1]
        scores[coco_eval.cocoGt.cats[category_id]["name"]] = float(values.mean()) * 100 if values.size else None
    return scores


def perfect_detections(
    coco_gt: COCO, image_id: int, coco_to_contiguous: Mapping[int, int], with_masks: bool
) -> Dict[str, Tensor]:
    """The detections of a perfect detector on image ``image_id`` of ``coco_gt``, in the model's output
    format (see ``CocoEvaluator.update``): every non-crowd object's box (x1 y1 x2 y2), contiguous label and
    score 1, with its 0/1 mask [N, H, W] when ``with_masks``. Scoring them must give AP 100: ``check_ground_truth``
    and the tests use it."""
    annotations = [a for a in coco_gt.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
    boxes = torch.tensor([a["bbox"] for a in annotations], dtype=torch.float64).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    output = {
        "boxes": boxes,
        "labels": torch.tensor([coco_to_contiguous[a["category_id"]] for a in annotations], dtype=torch.int64),
        "scores": torch.ones(len(annotations)),
    }
    if with_masks:
        info = coco_gt.imgs[image_id]
        output["masks"] = torch.from_numpy(
            np.stack([coco_gt.annToMask(a) for a in annotations])
            if annotations
            else np.zeros((0, info["height"], info["width"]), dtype=np.uint8)
        )
    return output


def check_ground_truth(dataset: DetectionDataset) -> None:
    """Score the ground truth of an evaluation set's first ``DRY_RUN_IMAGES`` images on itself, through the
    evaluator used after training, so that a file it cannot score fails now rather than after the last step.

    The objects themselves as detections (``perfect_detections``) must give AP 100, or no AP at all (no
    objects); box AP always, mask AP too when the data set gives masks and its ground truth has
    segmentations. Images with more objects than COCO's 100 detections per image cannot reach 100 and are
    left out. The detection task calls it wherever it builds an evaluation set (training, ``detect
    evaluate``).

    Args:
        dataset: an evaluation set (``train=False``) of ``splitattn.data.detection``.

    Raises:
        DetectionDataError: the ground truth cannot be evaluated, or does not score AP 100 on itself.
    """
    coco = dataset.coco
    with_segmentations = any("segmentation" in a for a in coco.anns.values())
    iou_types = ("bbox", "segm") if dataset.with_masks and with_segmentations else ("bbox",)
    image_ids = [i for i in sorted(coco.imgs)[:DRY_RUN_IMAGES] if len(coco.imgToAnns.get(i, ())) <= COCO_MAX_DETECTIONS]
    try:
        evaluator = CocoEvaluator(coco, iou_types, dataset.contiguous_to_coco)
        evaluator.update(
            {i: perfect_detections(coco, i, dataset.coco_to_contiguous, "segm" in iou_types) for i in image_ids}
        )
        if not evaluator.results:  # no object to detect in these images: nothing to score
            return
        scores = evaluator.summarize()
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise DetectionDataError(
            f"{dataset.name}: its ground truth cannot be evaluated ({type(error).__name__}: {error}); fix the "
            "annotation file."
        ) from error
    wrong = {kind: s["AP"] for kind, s in scores.items() if s["AP"] is not None and abs(s["AP"] - 100.0) > 1e-9}
    if wrong:
        raise DetectionDataError(
            f"{dataset.name}: its own ground truth scores {wrong} instead of AP 100; please report this with the "
            "annotation file."
        )
