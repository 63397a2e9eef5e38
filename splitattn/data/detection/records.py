"""Detection records: the target schema, one cleaned ``ImageRecord`` per image, box cleaning, the problem
counts, and the evaluation ground truth built from the records.

Every layout (COCO, VOC, YOLO) parses its files into ``ImageRecord``s through the same cleaning
(``clean_box``: degenerate boxes dropped, boxes partly outside the image clipped, each case counted in
the ``STATS_KEYS`` counts), and the evaluation ground truth is built from those records
(``coco_from_records``), never from the raw file, so the evaluator scores exactly the objects training
saw.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch import Tensor

from ...errors import DetectionDataError

PathLike = Union[str, Path]
Target = Dict[str, Any]
DetectionTransform = Callable[[Tensor, Target], Tuple[Tensor, Target]]
BACKGROUND = "__background__"
STATS_KEYS = (
    "images",  # listed in the annotation file / split file / folder
    "images_used",  # len(dataset)
    "images_missing",  # no image file (training: skipped; evaluation: scored with no detections)
    "annotation_files_bad",  # VOC: XML missing or unparsable (image skipped)
    "images_without_annotations",  # no annotation at all (kept for evaluation)
    "images_filtered_for_training",  # no usable annotation, left out because train=True
    "annotations",  # annotations of the listed images
    "unknown_category",  # category not in the category list (dropped)
    "boxes_degenerate",  # width or height <= 0, or not 4 finite numbers (dropped)
    "boxes_outside",  # entirely outside the image (dropped)
    "boxes_clipped",  # partly outside the image (clipped)
    "crowd_regions",  # iscrowd / difficult (not in training targets)
    "masks_from_box",  # COCO: segmentation missing or unusable, the box is the mask
)
STATS_TEXT = {
    "images_missing": "image files missing (skipped in training, their objects missed in evaluation)",
    "annotation_files_bad": "annotation files missing or unreadable (image skipped)",
    "images_without_annotations": "images without annotations",
    "images_filtered_for_training": "images without a usable annotation left out of training",
    "unknown_category": "annotations of an unknown category dropped",
    "boxes_degenerate": "degenerate boxes dropped",
    "boxes_outside": "boxes outside the image dropped",
    "boxes_clipped": "boxes clipped to the image",
    "crowd_regions": "crowd/difficult regions (ignored in training)",
    "masks_from_box": "annotations without a usable mask (box used as mask)",
}


@dataclass
class ImageRecord:
    """One image and its cleaned annotations: ``boxes`` float32 [N, 4] xyxy clipped to the image,
    ``labels`` int64 [N] contiguous, ``iscrowd`` int64 [N], ``area`` float32 [N], ``segmentations``
    one COCO segmentation (polygons or RLE dict) per box, or None for a box without a mask; the list
    is None when the layout has no masks (VOC)."""

    image_id: int
    path: Path
    height: int
    width: int
    boxes: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray
    area: np.ndarray
    segmentations: Optional[List[Any]]


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (polygon list, uncompressed RLE with list counts, or compressed RLE with
    str/bytes counts) as a uint8 [H, W] 0/1 mask, decoded exactly as ``COCO.annToMask`` does."""
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle)


def usable_segmentation(segmentation: Any, height: int, width: int) -> Any:
    """The segmentation with polygons of fewer than 3 points removed, or None if nothing usable is
    left (missing, empty, or an RLE whose size is not the image's)."""
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
        return polygons or None
    if isinstance(segmentation, dict) and "counts" in segmentation:
        return segmentation if list(segmentation.get("size", ())) == [height, width] else None
    return None


def box_mask(box: np.ndarray, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    x1, y1, x2, y2 = box
    mask[int(math.floor(y1)) : int(math.ceil(y2)), int(math.floor(x1)) : int(math.ceil(x2))] = 1
    return mask


def mask_area(segmentation: Any, height: int, width: int) -> float:
    """Pixel count of a COCO segmentation (what COCO's ``area`` holds)."""
    return float(segmentation_to_mask(segmentation, height, width).sum())


def parse_floats(values: Any, count: int) -> List[float]:
    """``count`` floats from a JSON/XML list; NaN for each entry that is missing or not a number."""
    values = list(values) if isinstance(values, (list, tuple)) else []
    out = []
    for i in range(count):
        try:
            out.append(float(values[i]))
        except (IndexError, TypeError, ValueError):
            out.append(math.nan)
    return out


def clean_box(box: Sequence[float], width: int, height: int, stats: Dict[str, int]) -> Optional[List[float]]:
    """``box`` (x1, y1, x2, y2) clipped to the ``width`` x ``height`` image, or None for a degenerate
    box (not finite, zero or negative width or height) or one entirely outside; each case is counted
    in ``stats``."""
    values = [float(v) for v in box]
    x1, y1, x2, y2 = values
    if not all(math.isfinite(v) for v in values) or x2 <= x1 or y2 <= y1:
        stats["boxes_degenerate"] += 1
        return None
    clipped = [min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height)]
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        stats["boxes_outside"] += 1
        return None
    if clipped != values:
        stats["boxes_clipped"] += 1
    return clipped


def image_record(
    image_id: int,
    path: Path,
    height: int,
    width: int,
    objects: List[Tuple[List[float], int, int, float, Any]],
    with_segmentations: bool,
) -> ImageRecord:
    """An ``ImageRecord`` from cleaned ``(box, label, iscrowd, area, segmentation)`` tuples."""
    return ImageRecord(
        image_id=image_id,
        path=path,
        height=height,
        width=width,
        boxes=np.array([o[0] for o in objects], dtype=np.float32).reshape(-1, 4),
        labels=np.array([o[1] for o in objects], dtype=np.int64),
        iscrowd=np.array([o[2] for o in objects], dtype=np.int64),
        area=np.array([o[3] for o in objects], dtype=np.float32),
        segmentations=[o[4] for o in objects] if with_segmentations else None,
    )


def coco_from_records(
    records: List[ImageRecord], categories: Dict[int, str], contiguous_to_coco: Dict[int, int], with_segmentations: bool
) -> COCO:
    """The evaluation ground truth of ``records``: an in-memory COCO object whose images are the records'
    (ids kept), whose annotations are their cleaned objects numbered 1..N (boxes x y w h; with
    ``with_segmentations`` each one's segmentation, or the RLE of its box mask when it has none) and
    whose categories are ``categories`` (category id -> name)."""
    annotations = []
    for record in records:
        segmentations = record.segmentations if with_segmentations and record.segmentations is not None else None
        for k, (box, label, crowd, area) in enumerate(
            zip(record.boxes.tolist(), record.labels.tolist(), record.iscrowd.tolist(), record.area.tolist())
        ):
            annotation = {
                "id": len(annotations) + 1,
                "image_id": record.image_id,
                "category_id": contiguous_to_coco[label],
                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                "area": area,
                "iscrowd": crowd,
            }
            if with_segmentations:
                segmentation = segmentations[k] if segmentations is not None else None
                if segmentation is None:
                    rle = mask_utils.encode(np.asfortranarray(box_mask(np.array(box), record.height, record.width)))
                    segmentation = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
                annotation["segmentation"] = segmentation
            annotations.append(annotation)
    coco = COCO()
    coco.dataset = {
        "images": [{"id": r.image_id, "file_name": r.path.name, "height": r.height, "width": r.width} for r in records],
        "annotations": annotations,
        "categories": [{"id": coco_id, "name": name} for coco_id, name in sorted(categories.items())],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class ProblemCounts(Dict[str, int]):
    """The ``STATS_KEYS`` counts of a data set (a plain dict of ints: ``metrics.json``'s ``data_stats``), and in
    ``examples`` the first case of each problem counted with ``note`` (which file, which value), so a data set
    left without a usable image can say why."""

    def __init__(self) -> None:
        super().__init__({key: 0 for key in STATS_KEYS})
        self.examples: Dict[str, str] = {}

    def note(self, key: str, example: str, count: int = 1) -> None:
        """Count ``count`` cases of problem ``key``; keep ``example`` if it is the first."""
        self[key] += count
        self.examples.setdefault(key, example)

    def merge(self, other: ProblemCounts) -> None:
        """Add ``other``'s counts and its examples of problems not seen yet."""
        for key, value in other.items():
            self[key] += value
        for key, example in other.examples.items():
            self.examples.setdefault(key, example)


def new_stats() -> ProblemCounts:
    """Zero counts of every ``STATS_KEYS`` problem."""
    return ProblemCounts()


def drop_missing(
    candidates: List[Tuple[int, Path]],
    skip_bad: bool,
    stats: ProblemCounts,
    fix: str,
    also_tried: Optional[Dict[int, List[Path]]] = None,
    keep: bool = False,
) -> set:
    """Image ids whose file does not exist, to leave out: counted with ``skip_bad``, else an error naming the
    first (and the other files ``also_tried`` for it). ``keep`` (an evaluation set): counted and kept, none left
    out, so the image stays in the ground truth and is scored as unreadable (its objects are misses)."""
    missing = [(image_id, path) for image_id, path in candidates if not path.is_file()]
    if missing:
        stats.note("images_missing", f"{missing[0][1]} does not exist", len(missing))
    if missing and not skip_bad:
        image_id, path = missing[0]
        others = [str(p) for p in (also_tried or {}).get(image_id, []) if p != path]
        nor = f" (nor {', '.join(others)})" if others else ""
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DetectionDataError(
            f"image file {path} does not exist{nor}{more}; {fix}, or pass --skip-bad to skip missing images."
        )
    return set() if keep else {image_id for image_id, _ in missing}
