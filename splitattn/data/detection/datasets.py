"""Object detection data: COCO json, Pascal VOC XML (VOCdevkit tree or a plain folder) and YOLO txt
data sets in torchvision's detection convention.

``dataset[i]`` is ``(image, target)``: the image as a float [3, H, W] RGB ``tv_tensors.Image`` in
0..1 and a dict with ``boxes`` (``tv_tensors.BoundingBoxes`` float32 [N, 4], XYXY in pixels),
``labels`` (int64 [N], contiguous ids 1..K, 0 being the background), ``masks``
(``tv_tensors.Mask`` uint8 [N, H, W], COCO and YOLO polygons only), ``image_id`` (int, the
ground truth's image id), ``area`` (float32 [N]), ``iscrowd`` (int64 [N]) and ``orig_size``
((H, W)). Category ids that are not 1..K (COCO's 1..90 with gaps, VOC's names, YOLO's 0..K-1)
are mapped to 1..K; the evaluator maps predictions back. Images keep their size: the model's
own transform resizes and normalises them.

Layouts (``DATASET_KINDS``; ``detect_layout`` tells them apart when ``--dataset`` is not given):

- ``coco``: an instances json and its image folder;
- ``voc``: ``VOCdevkit/VOC20xx/{JPEGImages,Annotations,ImageSets/Main}``;
- ``voc-folder``: Pascal VOC XML files as labelImg, CVAT and Roboflow export them, beside their
  images or apart from them, split by sub-folders (``train/``, ``val/``) or by list files
  (``train.txt``); the class list is read from the files when not given;
- ``yolo``: ``images/`` and ``labels/`` (one ``class cx cy w h`` line per box, normalised to 0..1,
  or ``class x1 y1 x2 y2 ...`` polygon lines, which become masks) with a ``data.yaml`` naming the
  classes and the train/val folders, as Ultralytics reads them.

Every data set holds its evaluation ground truth as a pycocotools ``COCO`` object (``dataset.coco``)
built from the cleaned records, never from the raw file: the evaluator scores exactly the objects
training saw (crowd/difficult regions kept as ``iscrowd=1``, which COCOeval ignores), with
annotation ids renumbered 1..N, so on any file the loader accepts a detector that outputs the
cleaned ground truth scores AP 100 (checked on every evaluation set when it is built, by scoring
its ground truth on itself).

Bad input is handled as torchvision's references and detectron2 do, counted in
``dataset.stats`` (``STATS_KEYS``), never a crash:

- an annotation whose category is not in the category list is dropped (never relabelled);
- boxes with zero or negative width or height are dropped; boxes partly outside the image are
  clipped to it, boxes entirely outside are dropped;
- crowd regions (COCO ``iscrowd=1``, VOC ``difficult``) are left out of training targets;
  the ground truth keeps them and COCOeval ignores detections that fall on them;
- for training (``train=True``), images without a usable annotation are left out (detectron2's
  default, ``FILTER_EMPTY_ANNOTATIONS``); for evaluation every image is kept;
- a missing image file is found when the data set is built (one stat a file, cheap even for
  COCO's 118k images); an image that cannot be decoded, or whose size differs from the
  annotation's, is found when it is loaded. With ``skip_bad`` both are skipped: a training
  sample is replaced by the next readable image, an evaluation sample is ``None`` (which
  ``collate_detection`` drops). Load-time failures are reported with a warning, since
  DataLoader worker processes cannot update the counts. Without ``skip_bad`` each is an error
  naming the file.

A file that is malformed rather than noisy (a COCO image id that is not an integer, an image
without its size, an annotation of an image that is not listed, two categories of one name) is an
error naming the file, the entry and the field when the data set is built. COCO's optional fields
get the standard defaults: ``iscrowd`` 0, ``area`` the mask's pixel count, else the box's area.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from ..classification import IMAGE_EXTENSIONS
from ..io import image_size, is_hidden, read_image
from ..segmentation.datasets import VOC_CLASSES

PathLike = Union[str, Path]
Target = Dict[str, Any]
DetectionTransform = Callable[[Tensor, Target], Tuple[Tensor, Target]]
BACKGROUND = "__background__"
VOC_DETECTION_CLASSES = VOC_CLASSES[1:]
DATASET_KINDS = ("coco", "voc", "voc-folder", "yolo")
DRY_RUN_IMAGES = 32  # evaluation sets: the ground truth of the first images is scored on itself when built
STATS_KEYS = (
    "images",  # listed in the annotation file / split file / folder
    "images_used",  # len(dataset)
    "images_missing",  # no image file (skipped)
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
    "images_missing": "image files missing (skipped)",
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


class DetectionDataError(ValueError):
    """An image or annotation file that cannot be used (malformed, or bad when ``skip_bad`` is off)."""


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


def _usable_segmentation(segmentation: Any, height: int, width: int) -> Any:
    """The segmentation with polygons of fewer than 3 points removed, or None if nothing usable is
    left (missing, empty, or an RLE whose size is not the image's)."""
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
        return polygons or None
    if isinstance(segmentation, dict) and "counts" in segmentation:
        return segmentation if list(segmentation.get("size", ())) == [height, width] else None
    return None


def _box_mask(box: np.ndarray, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    x1, y1, x2, y2 = box
    mask[int(math.floor(y1)) : int(math.ceil(y2)), int(math.floor(x1)) : int(math.ceil(x2))] = 1
    return mask


def _mask_area(segmentation: Any, height: int, width: int) -> float:
    """Pixel count of a COCO segmentation (what COCO's ``area`` holds)."""
    return float(segmentation_to_mask(segmentation, height, width).sum())


def _floats(values: Any, count: int) -> List[float]:
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


def _record(
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


def _coco_from_records(
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
                    rle = mask_utils.encode(np.asfortranarray(_box_mask(np.array(box), record.height, record.width)))
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


class DetectionDataset(Dataset):
    """Images with cleaned box annotations; see the module docstring for the target format.

    ``classes[0]`` is ``"__background__"``, ``classes[k]`` the name of contiguous label k;
    ``contiguous_to_coco`` / ``coco_to_contiguous`` map labels to the category ids of ``coco``, the
    evaluation ground truth built from ``records`` (all of them, before a training set filters them). ``classes_from_files`` is True when the class list
    was read from the annotation files (``summary`` then lists it). Raises ``DetectionDataError`` when
    no image is usable or (``train=False``) when the ground truth does not score AP 100 on itself.
    """

    def __init__(
        self,
        records: List[ImageRecord],
        classes: Sequence[str],
        contiguous_to_coco: Dict[int, int],
        stats: Dict[str, int],
        transforms: Optional[DetectionTransform],
        train: bool,
        skip_bad: bool,
        with_masks: bool,
        name: str,
        classes_from_files: bool = False,
    ) -> None:
        self.classes: List[str] = [BACKGROUND, *classes]
        self.contiguous_to_coco = dict(contiguous_to_coco)
        self.coco_to_contiguous = {coco_id: label for label, coco_id in self.contiguous_to_coco.items()}
        self.transforms = transforms
        self.train = train
        self.skip_bad = skip_bad
        self.with_masks = with_masks
        self.name = name
        self.stats = stats
        self.classes_from_files = classes_from_files
        self._all_records = records  # the ground truth's images: also those a training set leaves out
        if train:
            usable = [r for r in records if (r.iscrowd == 0).any()]
            stats["images_filtered_for_training"] = len(records) - len(usable)
            records = usable
        self.records = records
        stats["images_used"] = len(records)
        if not records:
            raise DetectionDataError(f"{name} has no usable images; {self.summary()}")
        if not train:
            with_segmentations = any("segmentation" in a for a in self.coco.anns.values())
            self.dry_evaluation(("bbox", "segm") if with_masks and with_segmentations else ("bbox",))

    @cached_property
    def coco(self) -> COCO:
        """The evaluation ground truth, built from the cleaned records on first use (when an evaluation set is
        built; a training set, which is never scored, does not pay for it)."""
        return _coco_from_records(
            self._all_records,
            {self.contiguous_to_coco[label]: self.classes[label] for label in range(1, len(self.classes))},
            self.contiguous_to_coco,
            any(r.segmentations is not None for r in self._all_records),
        )

    def dry_evaluation(self, iou_types: Sequence[str]) -> None:
        """Score the ground truth of the first ``DRY_RUN_IMAGES`` images on itself through the evaluator used
        after training, so that a file it cannot score fails now rather than after the last step: the
        objects themselves as detections must give AP 100 (or no AP at all: no objects). Images with more
        objects than COCO's 100 detections per image cannot reach 100 and are left out."""
        from ...tasks.detection.evaluation import CocoEvaluator, perfect_detections  # lazily: tasks load the models

        image_ids = [i for i in sorted(self.coco.imgs)[:DRY_RUN_IMAGES] if len(self.coco.imgToAnns.get(i, ())) <= 100]
        try:
            evaluator = CocoEvaluator(self.coco, iou_types, self.contiguous_to_coco)
            evaluator.update(
                {i: perfect_detections(self.coco, i, self.coco_to_contiguous, "segm" in iou_types) for i in image_ids}
            )
            if not evaluator.results:  # no object to detect in these images: nothing to score
                return
            scores = evaluator.summarize()
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise DetectionDataError(
                f"{self.name}: its ground truth cannot be evaluated ({type(error).__name__}: "
                f"{error}); fix the annotation file."
            ) from error
        wrong = {kind: s["AP"] for kind, s in scores.items() if s["AP"] is not None and abs(s["AP"] - 100.0) > 1e-9}
        if wrong:
            raise DetectionDataError(
                f"{self.name}: its own ground truth scores {wrong} instead of AP 100; please "
                "report this with the annotation file."
            )

    @property
    def num_classes(self) -> int:
        """K + 1: the object classes and the background."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.records)

    def summary(self) -> str:
        """One line for the log: images used and every non-zero problem count (and the class list when it
        was read from the files)."""
        problems = [f"{self.stats[key]} {text}" for key, text in STATS_TEXT.items() if self.stats.get(key)]
        return (
            f"{self.name}: {self.stats['images_used']} of {self.stats['images']} images, "
            f"{self.stats['annotations']} annotations, {self.num_classes - 1} classes"
            + (f" (read from the files, sorted: {', '.join(self.classes[1:])})" if self.classes_from_files else "")
            + ("; " + ", ".join(problems) if problems else "")
            + "."
        )

    def target(self, index: int) -> Target:
        """The target of image ``index`` without reading the image (crowd regions left out when training)."""
        record = self.records[index]
        keep = record.iscrowd == 0 if self.train else np.ones(len(record.labels), dtype=bool)
        target: Target = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.from_numpy(record.boxes[keep]), format="XYXY", canvas_size=(record.height, record.width)
            ),
            "labels": torch.from_numpy(record.labels[keep]),
            "image_id": record.image_id,
            "area": torch.from_numpy(record.area[keep]),
            "iscrowd": torch.from_numpy(record.iscrowd[keep]),
            "orig_size": (record.height, record.width),
        }
        if self.with_masks and record.segmentations is not None:
            masks = [
                segmentation_to_mask(s, record.height, record.width)
                if s is not None
                else _box_mask(box, record.height, record.width)
                for s, box, k in zip(record.segmentations, record.boxes, keep)
                if k
            ]
            target["masks"] = tv_tensors.Mask(
                torch.from_numpy(
                    np.stack(masks) if masks else np.zeros((0, record.height, record.width), dtype=np.uint8)
                )
            )
        return target

    def read_image(self, index: int) -> Optional[Tensor]:
        """The float [3, H, W] RGB image in 0..1, or None (with a warning) if it cannot be used and
        ``skip_bad`` is on."""
        record = self.records[index]
        try:
            rgb = read_image(record.path)
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            problem = f"image {record.path} cannot be read ({error})"
        else:
            if rgb.size == (record.width, record.height):
                return TF.pil_to_tensor(rgb).float().div_(255)
            problem = (
                f"image {record.path} is {rgb.size[0]}x{rgb.size[1]} but its annotation says "
                f"{record.width}x{record.height}"
            )
        if not self.skip_bad:
            raise DetectionDataError(
                f"{problem}; replace the file or fix its annotation, or pass --skip-bad to skip it."
            )
        warnings.warn(f"{self.name}: skipping: {problem}.", stacklevel=2)
        return None

    def __getitem__(self, index: int) -> Optional[Tuple[Tensor, Target]]:
        """``(image, target)`` after ``transforms``; a bad image is replaced by the next readable one
        when training and is ``None`` in evaluation (see the module docstring)."""
        for offset in range(len(self)):
            position = (index + offset) % len(self)
            image = self.read_image(position)
            if image is not None:
                break
            if not self.train:
                return None
        else:
            raise DetectionDataError(f"no image of {self.name} can be read.")
        image, target = tv_tensors.Image(image), self.target(position)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def _new_stats() -> Dict[str, int]:
    return {key: 0 for key in STATS_KEYS}


def _drop_missing(
    candidates: List[Tuple[int, Path]],
    skip_bad: bool,
    stats: Dict[str, int],
    fix: str,
    also_tried: Optional[Dict[int, List[Path]]] = None,
) -> set:
    """Image ids whose file does not exist: counted with ``skip_bad``, else an error naming the first (and
    the other files ``also_tried`` for it)."""
    missing = [(image_id, path) for image_id, path in candidates if not path.is_file()]
    stats["images_missing"] = len(missing)
    if missing and not skip_bad:
        image_id, path = missing[0]
        others = [str(p) for p in (also_tried or {}).get(image_id, []) if p != path]
        nor = f" (nor {', '.join(others)})" if others else ""
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DetectionDataError(
            f"image file {path} does not exist{nor}{more}; {fix}, or pass --skip-bad to skip missing images."
        )
    return {image_id for image_id, _ in missing}


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _load_coco_json(annotation_file: Path) -> COCO:
    """The COCO object of ``annotation_file`` after the checks pycocotools leaves to the evaluation: image
    and category ids are integers and unique, every image has a file name and a positive size, every
    category a unique name, every annotation names a listed image. Raises ``DetectionDataError`` naming
    the file, the entry and the field."""

    def fail(where: str, problem: str, fix: str) -> None:
        raise DetectionDataError(f"{annotation_file}: {where} {problem}; {fix}.")

    try:
        spec = json.loads(annotation_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:  # not json
        raise DetectionDataError(
            f"{annotation_file} is not a COCO instances json ({error}); pass the instances_*.json file (--annotations)."
        ) from error
    if not (
        isinstance(spec, dict) and isinstance(spec.get("images"), list) and isinstance(spec.get("categories"), list)
    ):
        raise DetectionDataError(
            f"{annotation_file} is not a COCO instances json (it needs an object with 'images' and "
            "'categories' lists); pass the instances_*.json file (--annotations)."
        )
    spec.setdefault("annotations", [])
    if not isinstance(spec["annotations"], list):
        fail("'annotations'", "is not a list", "write the annotations as a list of objects")
    image_ids = set()
    for i, image in enumerate(spec["images"]):
        where = f"images[{i}]"
        if not isinstance(image, dict):
            fail(where, "is not an object", "write each image as {'id', 'file_name', 'width', 'height'}")
        if not _is_integer(image.get("id")):
            fail(
                where,
                f"has 'id' {image.get('id')!r}",
                "COCO image ids are integers (the evaluation compares them as "
                "numbers); renumber the images and the annotations' 'image_id'",
            )
        if image["id"] in image_ids:
            fail(where, f"repeats image 'id' {image['id']}", "give every image its own id")
        image_ids.add(image["id"])
        if not isinstance(image.get("file_name"), str) or not image["file_name"]:
            fail(
                f"{where} (id {image['id']})",
                f"has 'file_name' {image.get('file_name')!r}",
                "name the image file relative to --images",
            )
        for key in ("width", "height"):
            value = image.get(key)
            if not (
                isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and value == int(value)
            ):
                fail(f"{where} (id {image['id']})", f"has {key!r} {value!r}", f"write the image's {key} in pixels")
    names: Dict[str, int] = {}
    for i, category in enumerate(spec["categories"]):
        where = f"categories[{i}]"
        if not isinstance(category, dict) or not _is_integer(category.get("id")):
            fail(
                where,
                f"has 'id' {category.get('id') if isinstance(category, dict) else category!r}",
                "category ids are integers",
            )
        name = category.get("name")
        if not isinstance(name, str) or not name:
            fail(where, f"has 'name' {name!r}", "name every category")
        if name in names or category["id"] in names.values():
            fail(
                where, f"repeats the name {name!r} or the id {category['id']}", "give each category its own name and id"
            )
        names[name] = category["id"]
    for i, annotation in enumerate(spec["annotations"]):
        if (
            not isinstance(annotation, dict)
            or not _is_integer(annotation.get("image_id"))
            or annotation["image_id"] not in image_ids
        ):
            value = annotation.get("image_id") if isinstance(annotation, dict) else annotation
            fail(
                f"annotations[{i}]",
                f"has 'image_id' {value!r}, which is not an image of 'images'",
                "each annotation must name one of the listed images by its integer id",
            )
    coco = COCO()
    coco.dataset = spec
    with contextlib.redirect_stdout(io.StringIO()):  # COCO prints its progress
        coco.createIndex()
    return coco


def _class_mapping(
    category_names: Dict[int, str], classes: Optional[Sequence[str]], source: str
) -> Tuple[List[str], Dict[int, int]]:
    """``(class names of labels 1..K, label -> category id)``: the categories sorted by id when ``classes`` is
    None, else ``classes`` matched to the categories by name (a class the file lacks gets an unused id, so
    the evaluation has no ground truth for it; a category not in ``classes`` is dropped and counted).
    Raises ``DetectionDataError`` when no class matches or ``classes`` repeats a name."""
    if classes is None:
        ids = sorted(category_names)
        return [category_names[i] for i in ids], {label: i for label, i in enumerate(ids, start=1)}
    classes = list(classes)
    if len(set(classes)) != len(classes):
        raise DetectionDataError(f"the class list {classes} repeats a name; give each class once.")
    by_name = {name: i for i, name in category_names.items()}
    if not any(name in by_name for name in classes):
        raise DetectionDataError(
            f"{source} has none of the classes {classes[:8]} (its categories: "
            f"{sorted(by_name)[:8]}); use the annotation file of the data set the model is for."
        )
    spare = max(category_names, default=0)
    mapping = {}
    for label, name in enumerate(classes, start=1):
        if name not in by_name:
            spare += 1
        mapping[label] = by_name.get(name, spare)
    return classes, mapping


class CocoDetectionDataset(DetectionDataset):
    """A COCO instances json (``images``, ``annotations`` with ``bbox`` x y w h and ``segmentation``,
    ``categories``) over the image files in ``root_images``.

    Category ids sorted ascending become labels 1..K; with ``classes`` (the training set's class names,
    for its evaluation set) the categories are matched by name instead, so a json that numbers them
    differently is scored correctly. Masks are decoded from polygons, uncompressed or compressed RLE when
    loaded (``with_masks=False`` skips them for box-only models). Raises ``DetectionDataError`` for a
    malformed file (see ``_load_coco_json``).
    """

    def __init__(
        self,
        root_images: PathLike,
        annotation_file: PathLike,
        transforms: Optional[DetectionTransform] = None,
        train: bool = False,
        skip_bad: bool = True,
        with_masks: bool = True,
        classes: Optional[Sequence[str]] = None,
    ) -> None:
        annotation_file, root_images = Path(annotation_file), Path(root_images)
        if not annotation_file.is_file():
            raise FileNotFoundError(
                f"COCO annotation file {annotation_file} does not exist; pass the instances json (--annotations)."
            )
        if not root_images.is_dir():
            raise FileNotFoundError(
                f"image folder {root_images} does not exist; pass the folder holding the json's "
                "file_name entries (--images)."
            )
        coco = _load_coco_json(annotation_file)
        class_names, contiguous_to_coco = _class_mapping(
            {i: c["name"] for i, c in coco.cats.items()}, classes, str(annotation_file)
        )
        coco_to_contiguous = {coco_id: label for label, coco_id in contiguous_to_coco.items() if coco_id in coco.cats}
        stats = _new_stats()
        images = [coco.imgs[image_id] for image_id in sorted(coco.imgs)]
        stats["images"] = len(images)
        missing = _drop_missing(
            [(info["id"], root_images / info["file_name"]) for info in images],
            skip_bad,
            stats,
            f"check --images {root_images} and the file_name entries of {annotation_file}",
        )
        records = []
        for info in images:
            if info["id"] in missing:
                continue
            annotations = coco.imgToAnns.get(info["id"], [])
            stats["annotations"] += len(annotations)
            stats["images_without_annotations"] += not annotations
            height, width = int(info["height"]), int(info["width"])
            objects = []
            for ann in annotations:
                if ann.get("category_id") not in coco_to_contiguous:
                    stats["unknown_category"] += 1
                    continue
                x, y, w, h = _floats(ann.get("bbox"), 4)
                box = clean_box([x, y, x + w, y + h], width, height, stats)
                if box is None:
                    continue
                crowd = int(bool(ann.get("iscrowd", 0)))
                stats["crowd_regions"] += crowd
                segmentation = _usable_segmentation(ann.get("segmentation"), height, width)
                stats["masks_from_box"] += segmentation is None
                area = _floats([ann.get("area")], 1)[0]
                if not (math.isfinite(area) and area > 0):  # converters often leave it out: COCO's own definition
                    area = (_mask_area(segmentation, height, width) if segmentation is not None else 0.0) or (
                        box[2] - box[0]
                    ) * (box[3] - box[1])
                objects.append((box, coco_to_contiguous[ann["category_id"]], crowd, area, segmentation))
            records.append(_record(info["id"], root_images / info["file_name"], height, width, objects, True))
        super().__init__(
            records,
            class_names,
            contiguous_to_coco,
            stats,
            transforms,
            train,
            skip_bad,
            with_masks,
            f"COCO {annotation_file.name}",
        )


def _voc_objects(
    xml_path: Path, classes: Sequence[str], stats: Dict[str, int]
) -> Tuple[int, int, List[tuple], str, str]:
    """(height, width, cleaned objects, ``<filename>``, ``<path>``) of one VOC XML file; boxes go from VOC's
    1-based inclusive pixel indices to x1 y1 x2 y2 coordinates (xmin - 1, ymin - 1, xmax, ymax), as
    detectron2 does."""
    root = ET.parse(xml_path).getroot()
    size = root.find("size")
    width, height = (
        int(v) if math.isfinite(v) else 0
        for v in _floats([size.findtext("width"), size.findtext("height")] if size is not None else [], 2)
    )
    if width <= 0 or height <= 0:
        raise ValueError("no image size (<size><width>, <height>)")
    objects = []
    for obj in root.iter("object"):
        stats["annotations"] += 1
        name = (obj.findtext("name") or "").strip()
        if name not in classes:
            stats["unknown_category"] += 1
            continue
        bndbox = obj.find("bndbox")
        xmin, ymin, xmax, ymax = _floats(
            [bndbox.findtext(tag) if bndbox is not None else None for tag in ("xmin", "ymin", "xmax", "ymax")], 4
        )
        box = clean_box([xmin - 1, ymin - 1, xmax, ymax], width, height, stats)
        if box is None:
            continue
        difficult = int((obj.findtext("difficult") or "0").strip() == "1")
        stats["crowd_regions"] += difficult
        area = (box[2] - box[0]) * (box[3] - box[1])
        objects.append((box, classes.index(name) + 1, difficult, area, None))
    return height, width, objects, (root.findtext("filename") or "").strip(), (root.findtext("path") or "").strip()


def _voc_class_names(xml_files: Iterable[Path]) -> List[str]:
    """The sorted object names of ``xml_files`` (files that cannot be parsed are left to the loader)."""
    names = set()
    for xml_path in xml_files:
        with contextlib.suppress(OSError, ET.ParseError):
            names.update((obj.findtext("name") or "").strip() for obj in ET.parse(xml_path).getroot().iter("object"))
    names.discard("")
    return sorted(names)


def _image_candidates(folders: Sequence[Path], filename: str, stem: str, recorded_path: str) -> List[Path]:
    """Where the image of a VOC XML may be, in order: ``<filename>`` in each folder, ``<stem>.jpg``, any image
    file of that stem (``.JPG``, ``.png``, ``.jpeg``...), then the ``<path>`` the tool recorded."""
    names = ([Path(filename).name] if filename else []) + [f"{stem}.jpg"]
    candidates = [folder / name for folder in folders for name in dict.fromkeys(names)]
    if not any(path.is_file() for path in candidates):
        stems = dict.fromkeys([Path(filename).stem, stem] if filename else [stem])
        candidates += [
            path
            for folder in folders
            if folder.is_dir()
            for s in stems
            for path in sorted(folder.glob(f"{s}.*"))
            if path.suffix.lower() in IMAGE_EXTENSIONS and path not in candidates
        ]
    return candidates + ([Path(recorded_path)] if recorded_path else [])


def _voc_records(
    entries: List[Tuple[Path, List[Path]]], classes: Sequence[str], skip_bad: bool, stats: Dict[str, int], fix: str
) -> List[ImageRecord]:
    """Records of ``(xml file, image folders)`` entries, image ids 1..N in their order. An XML file that
    cannot be used is counted (``skip_bad``) or an error; the image is the first of ``_image_candidates``
    that exists, and a missing one is counted or an error naming the candidates."""
    parsed = []
    for image_id, (xml_path, folders) in enumerate(entries, start=1):
        counts = _new_stats()  # merged only if the whole file and its image can be used
        try:
            height, width, objects, filename, recorded = _voc_objects(xml_path, classes, counts)
        except (OSError, ET.ParseError, ValueError, TypeError) as error:
            if not skip_bad:
                raise DetectionDataError(
                    f"annotation file {xml_path} cannot be used ({error}); fix it or {fix}, or pass "
                    "--skip-bad to skip it."
                ) from error
            stats["annotation_files_bad"] += 1
            continue
        tried = _image_candidates(folders, filename, xml_path.stem, recorded)
        path = next((p for p in tried if p.is_file()), tried[0])
        parsed.append((image_id, path, tried, height, width, objects, counts))
    missing = _drop_missing(
        [(p[0], p[1]) for p in parsed],
        skip_bad,
        stats,
        f"check the XML files' <filename> against the images, or {fix}",
        {p[0]: p[2] for p in parsed},
    )
    records = []
    for image_id, path, _, height, width, objects, counts in parsed:
        if image_id in missing:
            continue
        counts["images_without_annotations"] = int(counts["annotations"] == 0)
        for key, value in counts.items():
            stats[key] += value
        records.append(_record(image_id, path, height, width, objects, False))
    return records


class VocDetectionDataset(DetectionDataset):
    """Pascal VOC detection (``VOCdevkit/VOC20xx/{JPEGImages,Annotations,ImageSets/Main}``).

    ``root`` is the VOC20xx folder or one above it holding a single year; ``split`` names
    ``ImageSets/Main/<split>.txt``. ``classes`` (default: the 20 VOC classes) become labels 1..K in
    the given order; an object of another name is dropped and counted. ``difficult`` objects are
    crowd regions: out of training targets and ignored by COCOeval (the crowd rule: a detection on
    them is neither a true nor a false positive). The image is the XML's ``<filename>`` in
    ``JPEGImages`` (else ``<name>.jpg``, else another image file of that name). Image ids are positions
    in the split file, from 1. The ``coco`` ground truth uses the labels as category ids.
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        classes: Optional[Sequence[str]] = None,
        transforms: Optional[DetectionTransform] = None,
        train: bool = False,
        skip_bad: bool = True,
    ) -> None:
        base = _find_voc_root(Path(root))
        list_file = base / "ImageSets" / "Main" / f"{split}.txt"
        if not list_file.is_file():
            raise FileNotFoundError(
                f"{list_file} does not exist; --data must be a VOCdevkit/VOC20xx folder (or the "
                "folder above it) and the split one of its ImageSets/Main/*.txt."
            )
        names = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
        classes = list(classes) if classes is not None else list(VOC_DETECTION_CLASSES)
        stats = _new_stats()
        records = _voc_records(
            [(base / "Annotations" / f"{name}.xml", [base / "JPEGImages"]) for name in names],
            classes,
            skip_bad,
            stats,
            f"remove the name from {list_file}",
        )
        stats["images"] = len(names)
        super().__init__(
            records,
            classes,
            {k: k for k in range(1, len(classes) + 1)},
            stats,
            transforms,
            train,
            skip_bad,
            False,
            f"VOC {base.name} {split}",
        )


def _find_voc_root(root: Path) -> Path:
    """``root`` itself if it holds ``Annotations``, else its only ``VOC*`` (or ``VOCdevkit/VOC*``) child that does."""
    found = _voc_roots(root)
    if len(found) != 1:
        which = "several: " + ", ".join(str(p) for p in found) if found else "none"
        raise FileNotFoundError(
            f"{root} must be a VOC20xx folder (with Annotations/) or hold exactly one; found "
            f"{which}. Pass the year's folder."
        )
    return found[0]


def _voc_roots(root: Path) -> List[Path]:
    if (root / "Annotations").is_dir():
        return [root]
    return sorted(
        p for pattern in ("VOC*", "VOCdevkit/VOC*") for p in root.glob(pattern) if (p / "Annotations").is_dir()
    )


def _xml_files(folder: Path) -> List[Path]:
    return sorted(p for p in folder.rglob("*.xml") if not is_hidden(p, folder))


class VocFolderDetectionDataset(DetectionDataset):
    """Pascal VOC XML files as labelImg, CVAT and Roboflow export them, outside a VOCdevkit tree.

    The split is ``root/<split>/`` (every ``*.xml`` below it; for ``val`` also Roboflow's ``valid/``) or the
    list file ``root/<split>.txt``
    (one name per line: a file stem, an image or an XML file name; the XML of that stem is looked up
    under ``root``). Each XML's image (its ``<filename>``, see ``VocDetectionDataset``) is looked for
    beside the XML, in ``images`` when given, in ``images/`` or ``JPEGImages/`` beside the XML's folder,
    and in ``root/images``. ``classes`` default to the object names of the split's files, sorted
    (``summary`` lists them); pass the training set's ``classes`` to its evaluation set. Coordinates
    and ``difficult`` as in VOC. Raises ``FileNotFoundError`` naming what was found when the split is
    neither a folder nor a list file.
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        classes: Optional[Sequence[str]] = None,
        transforms: Optional[DetectionTransform] = None,
        train: bool = False,
        skip_bad: bool = True,
        images: Optional[PathLike] = None,
    ) -> None:
        root = Path(root)
        names = [split, *(("valid", "validation") if split == "val" else ())]  # Roboflow writes valid/
        folder = next((root / name for name in names if (root / name).is_dir()), root / split)
        list_file = root / f"{split}.txt"
        if folder.is_dir():
            xml_files, fix = _xml_files(folder), f"remove it from {folder}"
        elif list_file.is_file():
            by_stem: Dict[str, Path] = {}
            for path in _xml_files(root):
                by_stem.setdefault(path.stem, path)
            stems = [Path(line.strip()).stem for line in list_file.read_text().splitlines() if line.strip()]
            xml_files = [by_stem.get(stem, root / f"{stem}.xml") for stem in stems]
            fix = f"remove it from {list_file}"
        else:
            found = sorted(p.name for p in root.iterdir() if not is_hidden(p, root))[:12]
            raise FileNotFoundError(
                f"{root} has neither a {split}/ folder of XML files nor a {split}.txt list; found "
                f"{found}. Put each split's files in a sub-folder or list them in <split>.txt."
            )
        classes_from_files = classes is None
        classes = _voc_class_names(xml_files) if classes is None else list(classes)
        if not classes:
            raise DetectionDataError(
                f"no object names in the XML files of {folder if folder.is_dir() else list_file}; "
                "pass --classes or check the split."
            )
        extra = [Path(images)] if images else []
        stats = _new_stats()
        records = _voc_records(
            [
                (x, [x.parent, *extra, x.parent.parent / "images", x.parent.parent / "JPEGImages", root / "images"])
                for x in xml_files
            ],
            classes,
            skip_bad,
            stats,
            fix,
        )
        stats["images"] = len(xml_files)
        super().__init__(
            records,
            classes,
            {k: k for k in range(1, len(classes) + 1)},
            stats,
            transforms,
            train,
            skip_bad,
            False,
            f"VOC folder {root.name} {split}",
            classes_from_files,
        )


def _yolo_label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder of the path becomes ``labels``, the suffix ``.txt``."""
    parts = list(image.parts)
    if "images" in parts[:-1]:
        parts[len(parts) - 2 - parts[-2::-1].index("images")] = "labels"
    return Path(*parts).with_suffix(".txt")


def _yolo_objects(label_file: Path, width: int, height: int, num_classes: int, stats: Dict[str, int]) -> List[tuple]:
    """Cleaned objects of one YOLO label file: ``class cx cy w h`` boxes and ``class x1 y1 x2 y2 ...``
    polygons (normalised to 0..1), polygons kept as COCO polygon segmentations in pixels."""
    objects = []
    lines = label_file.read_text().splitlines() if label_file.is_file() else []
    for line in lines:
        if not line.strip():
            continue
        stats["annotations"] += 1
        fields = line.split()
        values = _floats(fields[1:], len(fields) - 1)
        cls = _floats(fields[:1], 1)[0]
        if not (math.isfinite(cls) and cls == int(cls) and 0 <= cls < num_classes):
            stats["unknown_category"] += 1
            continue
        segmentation = None
        if len(values) == 4:
            cx, cy, w, h = values
            box = [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
        elif len(values) >= 6 and len(values) % 2 == 0 and all(math.isfinite(v) for v in values):
            xs, ys = [v * width for v in values[0::2]], [v * height for v in values[1::2]]
            box = [min(xs), min(ys), max(xs), max(ys)]
            segmentation = [[c for xy in zip(xs, ys) for c in xy]]
        else:
            box = [math.nan] * 4
        box = clean_box(box, width, height, stats)
        if box is None:
            continue
        area = _mask_area(segmentation, height, width) if segmentation is not None else 0.0
        objects.append((box, int(cls) + 1, 0, area or (box[2] - box[0]) * (box[3] - box[1]), segmentation))
    return objects


def _yolo_images(entry: Any, base: Path, source: Path) -> List[Path]:
    """The image files of a ``data.yaml`` split entry: a folder (searched recursively), a ``.txt`` list of
    image paths, or a list of those; relative paths are taken from ``base``, else from the yaml's folder."""
    if isinstance(entry, (list, tuple)):
        return [path for item in entry for path in _yolo_images(item, base, source)]
    candidates = [base / str(entry), source.parent / str(entry), source.parent / str(entry).lstrip("./")]
    where = next((p for p in candidates if p.exists()), None)
    if where is None:
        raise FileNotFoundError(
            f"{source}: the split folder {entry!r} does not exist (looked for "
            f"{', '.join(str(p) for p in dict.fromkeys(candidates))})."
        )
    if where.is_file():
        lines = [line.strip() for line in where.read_text().splitlines() if line.strip()]
        return [Path(line) if Path(line).is_absolute() else where.parent / line for line in lines]
    return sorted(p for p in where.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not is_hidden(p, where))


def _mapping(value: Any) -> Dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _read_data_yaml(root: Path) -> Tuple[Optional[Path], Dict[str, Any]]:
    """``(path, contents)`` of the YOLO ``data.yaml`` at or in ``root`` (``(None, {})`` without one)."""
    import yaml

    path = root if root.is_file() else root / "data.yaml"
    if not path.is_file():
        found = [p for p in sorted(root.glob("*.y*ml")) if "names" in _mapping(yaml.safe_load(p.read_text()))]
        if len(found) != 1:
            return None, {}
        path = found[0]
    spec = yaml.safe_load(path.read_text())
    if not isinstance(spec, dict):
        raise DetectionDataError(f"{path} is not a YOLO data.yaml (a mapping with 'names', 'train', 'val').")
    return path, spec


class YoloDetectionDataset(DetectionDataset):
    """The YOLO layout (Ultralytics): ``images/<split>/`` and ``labels/<split>/`` with one ``.txt`` per image.

    ``root`` holds (or is) ``data.yaml``: ``names`` (a list, or a mapping 0..K-1 -> name) and one entry per
    split (``train``, ``val``: a folder, a list file, or a list of those; relative to ``path`` when given,
    else to the yaml's folder). Without a yaml the images are ``root/images/<split>`` and ``classes`` are
    required. Class k of the files is label k + 1. A label line ``k cx cy w h`` is a box (normalised by the
    image's width and height), a line ``k x1 y1 x2 y2 ...`` a polygon, whose bounds give the box and which
    becomes the mask; an image without a label file has no objects. Image sizes are read from the image
    headers (EXIF orientation applied); image ids are positions in the sorted file list, from 1.
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        classes: Optional[Sequence[str]] = None,
        transforms: Optional[DetectionTransform] = None,
        train: bool = False,
        skip_bad: bool = True,
        with_masks: bool = True,
    ) -> None:
        root = Path(root)
        source, spec = _read_data_yaml(root)
        if source is not None:
            names = spec.get("names")
            if isinstance(names, dict):
                names = [names[k] for k in sorted(names)] if sorted(names) == list(range(len(names))) else None
            if not isinstance(names, list) or not names:
                raise DetectionDataError(f"{source}: 'names' must list the class names (or map 0..K-1 to them).")
            names = [str(n) for n in names]
            if classes is not None and list(classes) != names:
                raise DetectionDataError(
                    f"{source} names the classes {names[:8]} but {list(classes)[:8]} were given; "
                    "a YOLO data set takes its class list from its data.yaml."
                )
            if split not in spec:
                raise DetectionDataError(
                    f"{source} has no {split!r} entry (it has {sorted(spec)}); name the split "
                    "folder there or choose another split."
                )
            base = source.parent / str(spec.get("path") or ".")
            images = _yolo_images(spec[split], base, source)
        else:
            if classes is None:
                raise DetectionDataError(
                    f"{root} has no data.yaml; pass the class names of YOLO ids 0..K-1 with "
                    "--classes (or write a data.yaml with 'names')."
                )
            names = list(classes)
            images = _yolo_images(f"images/{split}", root, root / "data.yaml")
        stats = _new_stats()
        stats["images"] = len(images)
        missing = _drop_missing(
            list(enumerate(images, start=1)), skip_bad, stats, f"check the split's list in {source}"
        )
        records = []
        for image_id, path in enumerate(images, start=1):
            if image_id in missing:
                continue
            try:
                width, height = image_size(path)
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                if not skip_bad:
                    raise DetectionDataError(
                        f"image {path} cannot be read ({error}); replace or remove it, or pass --skip-bad to skip it."
                    ) from error
                stats["images_missing"] += 1
                continue
            objects = _yolo_objects(_yolo_label_path(path), width, height, len(names), stats)
            stats["images_without_annotations"] += not objects
            records.append(_record(image_id, path, height, width, objects, True))
        if not any(s is not None for r in records for s in r.segmentations):  # box lines only: no masks
            for record in records:
                record.segmentations = None
        super().__init__(
            records,
            names,
            {k: k for k in range(1, len(names) + 1)},
            stats,
            transforms,
            train,
            skip_bad,
            with_masks,
            f"YOLO {root.name} {split}",
        )


def detect_layout(root: PathLike, annotation_file: Optional[PathLike] = None) -> str:
    """The ``DATASET_KINDS`` entry of the data at ``root``: ``coco`` with an ``annotation_file`` or
    ``annotations/*.json``, ``yolo`` with a ``data.yaml`` or ``images/`` + ``labels/``, ``voc`` for a
    VOCdevkit tree, ``voc-folder`` for other XML files. Raises ``FileNotFoundError`` naming what was
    found when it cannot tell."""
    root = Path(root)
    if annotation_file is not None or any((root / "annotations").glob("*.json")):
        return "coco"
    if (
        root.is_file()
        and root.suffix in (".yaml", ".yml")
        or _read_data_yaml(root)[0] is not None
        or ((root / "images").is_dir() and (root / "labels").is_dir())
    ):
        return "yolo"
    if any((p / "ImageSets" / "Main").is_dir() for p in _voc_roots(root)):
        return "voc"
    if next((p for p in root.rglob("*.xml") if not is_hidden(p, root)), None) is not None:
        return "voc-folder"
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir() if not is_hidden(p, root))[:12]
    raise FileNotFoundError(
        f"cannot tell the layout of {root}: found {found or 'nothing'}, but no COCO "
        "annotations/*.json, no YOLO data.yaml or images/ + labels/, no VOCdevkit tree and no VOC "
        f"XML files; pass --dataset ({', '.join(DATASET_KINDS)}) and the files it needs."
    )


def _first_existing(candidates: Sequence[Path], what: str, option: str) -> Path:
    for path in candidates:
        if path.exists():
            return path
    raise FileNotFoundError(
        f"no {what} found (looked for {', '.join(str(p) for p in candidates)}); pass it with {option}."
    )


def build_detection_dataset(
    kind: Optional[str],
    root: PathLike,
    split: str,
    train: bool,
    transforms: Optional[DetectionTransform] = None,
    annotation_file: Optional[PathLike] = None,
    images: Optional[PathLike] = None,
    classes: Optional[Sequence[str]] = None,
    skip_bad: bool = True,
    with_masks: bool = True,
) -> DetectionDataset:
    """One of ``DATASET_KINDS`` by name, or the one ``detect_layout`` finds when ``kind`` is None.

    ``coco``: the json is ``annotation_file`` or the first of ``root/annotations/instances_<split>2017.json``,
    ``instances_<split>.json``, ``instances.json``; the images ``images`` or the first of
    ``root/<split>2017``, ``root/<split>``, ``root/images``. ``voc``: see ``VocDetectionDataset``,
    ``voc-folder``: ``VocFolderDetectionDataset`` (``images``: another folder to look for images in),
    ``yolo``: ``YoloDetectionDataset``. ``classes`` are the names of labels 1..K: pass the training set's
    ``classes[1:]`` when building its evaluation set, so that both number the classes alike (COCO
    categories are matched by name; VOC defaults to the 20 VOC classes, a VOC folder to the names in its
    files, YOLO to its data.yaml). ``transforms`` is applied to every sample (see
    ``transforms.build_detection_train_transform``).
    """
    base = Path(root)
    if not base.exists():
        raise FileNotFoundError(
            f"data folder {root} does not exist; --data must be a COCO root (annotations/ and "
            "images), a VOCdevkit, a folder of VOC XML files or a YOLO folder (data.yaml)."
        )
    kind = kind or detect_layout(base, annotation_file)
    if kind == "coco":
        annotations = (
            Path(annotation_file)
            if annotation_file
            else _first_existing(
                [
                    base / "annotations" / f"instances_{split}2017.json",
                    base / "annotations" / f"instances_{split}.json",
                    base / "annotations" / "instances.json",
                ],
                "COCO annotation file",
                "--annotations",
            )
        )
        folder = (
            Path(images)
            if images
            else _first_existing([base / f"{split}2017", base / split, base / "images"], "image folder", "--images")
        )
        return CocoDetectionDataset(folder, annotations, transforms, train, skip_bad, with_masks, classes)
    if kind == "voc":
        return VocDetectionDataset(base, split, classes, transforms, train, skip_bad)
    if kind == "voc-folder":
        return VocFolderDetectionDataset(base, split, classes, transforms, train, skip_bad, images)
    if kind == "yolo":
        return YoloDetectionDataset(base, split, classes, transforms, train, skip_bad, with_masks)
    raise ValueError(f"unknown detection data set kind {kind!r}; choose one of {', '.join(DATASET_KINDS)}.")


def collate_detection(batch: List[Optional[Tuple[Tensor, Target]]]) -> Tuple[List[Tensor], List[Target]]:
    """Lists of images and targets (images differ in size; the model batches them). ``None`` samples
    (unreadable evaluation images) are dropped, so the lists may be shorter than the batch, or empty."""
    kept = [item for item in batch if item is not None]
    return [item[0] for item in kept], [item[1] for item in kept]
