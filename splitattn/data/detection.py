"""Object detection data: COCO json and Pascal VOC XML data sets in torchvision's detection convention.

``dataset[i]`` is ``(image, target)``: the image as a float [3, H, W] RGB tensor in 0..1 and
a dict with ``boxes`` (float32 [N, 4], x1 y1 x2 y2 in pixels), ``labels`` (int64 [N],
contiguous ids 1..K, 0 being the background), ``masks`` (uint8 [N, H, W], COCO only),
``image_id`` (int, the ground truth's image id), ``area`` (float32 [N]), ``iscrowd``
(int64 [N]) and ``orig_size`` ((H, W)). Category ids that are not 1..K (COCO's 1..90 with
gaps, VOC's names) are mapped to 1..K in sorted order; the evaluator maps predictions back.
Images keep their size: the model's own transform resizes and normalises them.

Both data sets hold the ground truth as a pycocotools ``COCO`` object (``dataset.coco``, built
in memory for VOC), so one evaluator (COCOeval) scores both.

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
"""
from __future__ import annotations

import contextlib
import io
import math
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from .io import read_image
from .segmentation import VOC_CLASSES

PathLike = Union[str, Path]
Target = Dict[str, Any]
DetectionTransform = Callable[[Tensor, Target], Tuple[Tensor, Target]]
BACKGROUND = "__background__"
VOC_DETECTION_CLASSES = VOC_CLASSES[1:]
DATASET_KINDS = ("coco", "voc")
STATS_KEYS = (
    "images",                         # listed in the annotation file / split file
    "images_used",                    # len(dataset)
    "images_missing",                 # no image file (skipped)
    "annotation_files_bad",           # VOC: XML missing or unparsable (image skipped)
    "images_without_annotations",     # no annotation at all (kept for evaluation)
    "images_filtered_for_training",   # no usable annotation, left out because train=True
    "annotations",                    # annotations of the listed images
    "unknown_category",               # category not in the category list (dropped)
    "boxes_degenerate",               # width or height <= 0, or not 4 finite numbers (dropped)
    "boxes_outside",                  # entirely outside the image (dropped)
    "boxes_clipped",                  # partly outside the image (clipped)
    "crowd_regions",                  # iscrowd / difficult (not in training targets)
    "masks_from_box",                 # COCO: segmentation missing or unusable, the box is the mask
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
    """An image or annotation file that cannot be used, when ``skip_bad`` is off."""


@dataclass
class ImageRecord:
    """One image and its cleaned annotations: ``boxes`` float32 [N, 4] xyxy clipped to the image,
    ``labels`` int64 [N] contiguous, ``iscrowd`` int64 [N], ``area`` float32 [N], ``segmentations``
    one COCO segmentation (polygons or RLE dict) per box, or None (no masks, VOC)."""

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
    mask[int(math.floor(y1)):int(math.ceil(y2)), int(math.floor(x1)):int(math.ceil(x2))] = 1
    return mask


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


def _record(image_id: int, path: Path, height: int, width: int, objects: List[Tuple[List[float], int, int, float, Any]],
            with_segmentations: bool) -> ImageRecord:
    """An ``ImageRecord`` from cleaned ``(box, label, iscrowd, area, segmentation)`` tuples."""
    return ImageRecord(
        image_id=image_id, path=path, height=height, width=width,
        boxes=np.array([o[0] for o in objects], dtype=np.float32).reshape(-1, 4),
        labels=np.array([o[1] for o in objects], dtype=np.int64),
        iscrowd=np.array([o[2] for o in objects], dtype=np.int64),
        area=np.array([o[3] for o in objects], dtype=np.float32),
        segmentations=[o[4] for o in objects] if with_segmentations else None,
    )


class DetectionDataset(Dataset):
    """Images with cleaned box annotations; see the module docstring for the target format.

    ``classes[0]`` is ``"__background__"``, ``classes[k]`` the name of contiguous label k;
    ``contiguous_to_coco`` / ``coco_to_contiguous`` map labels to the category ids of ``coco``.
    """

    def __init__(self, records: List[ImageRecord], classes: Sequence[str], coco: COCO,
                 contiguous_to_coco: Dict[int, int], stats: Dict[str, int], transforms: Optional[DetectionTransform],
                 train: bool, skip_bad: bool, with_masks: bool, name: str) -> None:
        self.classes: List[str] = [BACKGROUND, *classes]
        self.coco = coco
        self.contiguous_to_coco = dict(contiguous_to_coco)
        self.coco_to_contiguous = {coco_id: label for label, coco_id in self.contiguous_to_coco.items()}
        self.transforms = transforms
        self.train = train
        self.skip_bad = skip_bad
        self.with_masks = with_masks
        self.name = name
        self.stats = stats
        if train:
            usable = [r for r in records if (r.iscrowd == 0).any()]
            stats["images_filtered_for_training"] = len(records) - len(usable)
            records = usable
        self.records = records
        stats["images_used"] = len(records)
        if not records:
            raise DetectionDataError(f"{name} has no usable images; {self.summary()}")

    @property
    def num_classes(self) -> int:
        """K + 1: the object classes and the background."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.records)

    def summary(self) -> str:
        """One line for the log: images used and every non-zero problem count."""
        problems = [f"{self.stats[key]} {text}" for key, text in STATS_TEXT.items() if self.stats.get(key)]
        return (f"{self.name}: {self.stats['images_used']} of {self.stats['images']} images, "
                f"{self.stats['annotations']} annotations, {self.num_classes - 1} classes"
                + ("; " + ", ".join(problems) if problems else "") + ".")

    def target(self, index: int) -> Target:
        """The target of image ``index`` without reading the image (crowd regions left out when training)."""
        record = self.records[index]
        keep = record.iscrowd == 0 if self.train else np.ones(len(record.labels), dtype=bool)
        target: Target = {
            "boxes": torch.from_numpy(record.boxes[keep]),
            "labels": torch.from_numpy(record.labels[keep]),
            "image_id": record.image_id,
            "area": torch.from_numpy(record.area[keep]),
            "iscrowd": torch.from_numpy(record.iscrowd[keep]),
            "orig_size": (record.height, record.width),
        }
        if self.with_masks and record.segmentations is not None:
            masks = [segmentation_to_mask(s, record.height, record.width) if s is not None
                     else _box_mask(box, record.height, record.width)
                     for s, box, k in zip(record.segmentations, record.boxes, keep) if k]
            target["masks"] = torch.from_numpy(np.stack(masks) if masks else
                                               np.zeros((0, record.height, record.width), dtype=np.uint8))
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
            problem = (f"image {record.path} is {rgb.size[0]}x{rgb.size[1]} but its annotation says "
                       f"{record.width}x{record.height}")
        if not self.skip_bad:
            raise DetectionDataError(f"{problem}; replace the file or fix its annotation, or pass --skip-bad to skip it.")
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
        target = self.target(position)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def _new_stats() -> Dict[str, int]:
    return {key: 0 for key in STATS_KEYS}


def _drop_missing(candidates: List[Tuple[int, Path]], skip_bad: bool, stats: Dict[str, int], fix: str) -> set:
    """Image ids whose file does not exist: counted with ``skip_bad``, else an error naming the first."""
    missing = [(image_id, path) for image_id, path in candidates if not path.is_file()]
    stats["images_missing"] = len(missing)
    if missing and not skip_bad:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DetectionDataError(f"image file {missing[0][1]} does not exist{more}; {fix}, or pass --skip-bad to skip "
                                 "missing images.")
    return {image_id for image_id, _ in missing}


class CocoDetectionDataset(DetectionDataset):
    """A COCO instances json (``images``, ``annotations`` with ``bbox`` x y w h and ``segmentation``,
    ``categories``) over the image files in ``root_images``.

    Category ids sorted ascending become labels 1..K. Masks are decoded from polygons, uncompressed
    or compressed RLE when loaded (``with_masks=False`` skips them for box-only models).
    """

    def __init__(self, root_images: PathLike, annotation_file: PathLike, transforms: Optional[DetectionTransform] = None,
                 train: bool = False, skip_bad: bool = True, with_masks: bool = True) -> None:
        annotation_file, root_images = Path(annotation_file), Path(root_images)
        if not annotation_file.is_file():
            raise FileNotFoundError(f"COCO annotation file {annotation_file} does not exist; pass the instances json "
                                    "(--annotations).")
        if not root_images.is_dir():
            raise FileNotFoundError(f"image folder {root_images} does not exist; pass the folder holding the json's "
                                    "file_name entries (--images).")
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints its progress
                coco = COCO(str(annotation_file))
        except (ValueError, AssertionError) as error:  # not json, or not a json object
            raise DetectionDataError(f"{annotation_file} is not a COCO instances json ({error or 'not an object'}); "
                                     "pass the instances_*.json file (--annotations).") from error
        category_ids = sorted(coco.cats)
        contiguous_to_coco = {label: coco_id for label, coco_id in enumerate(category_ids, start=1)}
        coco_to_contiguous = {coco_id: label for label, coco_id in contiguous_to_coco.items()}
        stats = _new_stats()
        images = [coco.imgs[image_id] for image_id in sorted(coco.imgs)]
        stats["images"] = len(images)
        missing = _drop_missing([(info["id"], root_images / info["file_name"]) for info in images], skip_bad, stats,
                                f"check --images {root_images} and the file_name entries of {annotation_file}")
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
                area = area if math.isfinite(area) else (box[2] - box[0]) * (box[3] - box[1])
                objects.append((box, coco_to_contiguous[ann["category_id"]], crowd, area, segmentation))
            records.append(_record(info["id"], root_images / info["file_name"], height, width, objects, True))
        classes = [coco.cats[coco_id]["name"] for coco_id in category_ids]
        super().__init__(records, classes, coco, contiguous_to_coco, stats, transforms, train, skip_bad, with_masks,
                         f"COCO {annotation_file.name}")


def _voc_objects(xml_path: Path, classes: Sequence[str], stats: Dict[str, int]) -> Tuple[int, int, List[tuple]]:
    """(height, width, cleaned objects) of one VOC XML file; boxes go from VOC's 1-based inclusive pixel
    indices to x1 y1 x2 y2 coordinates (xmin - 1, ymin - 1, xmax, ymax), as detectron2 does."""
    root = ET.parse(xml_path).getroot()
    size = root.find("size")
    width, height = (int(v) if math.isfinite(v) else 0 for v in _floats(
        [size.findtext("width"), size.findtext("height")] if size is not None else [], 2))
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
        xmin, ymin, xmax, ymax = _floats([bndbox.findtext(tag) if bndbox is not None else None
                                          for tag in ("xmin", "ymin", "xmax", "ymax")], 4)
        box = clean_box([xmin - 1, ymin - 1, xmax, ymax], width, height, stats)
        if box is None:
            continue
        difficult = int((obj.findtext("difficult") or "0").strip() == "1")
        stats["crowd_regions"] += difficult
        area = (box[2] - box[0]) * (box[3] - box[1])
        objects.append((box, classes.index(name) + 1, difficult, area, None))
    return height, width, objects


def _coco_from_records(records: List[ImageRecord], classes: Sequence[str], file_names: Dict[int, str]) -> COCO:
    """An in-memory COCO ground truth (category ids = contiguous labels, boxes x y w h) of ``records``."""
    annotations = []
    for record in records:
        for box, label, crowd, area in zip(record.boxes.tolist(), record.labels.tolist(), record.iscrowd.tolist(),
                                           record.area.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": record.image_id, "category_id": label,
                                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "area": area,
                                "iscrowd": crowd})
    coco = COCO()
    coco.dataset = {
        "images": [{"id": r.image_id, "file_name": file_names[r.image_id], "height": r.height, "width": r.width}
                   for r in records],
        "annotations": annotations,
        "categories": [{"id": label, "name": name} for label, name in enumerate(classes, start=1)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class VocDetectionDataset(DetectionDataset):
    """Pascal VOC detection (``VOCdevkit/VOC20xx/{JPEGImages,Annotations,ImageSets/Main}``).

    ``root`` is the VOC20xx folder or one above it holding a single year; ``split`` names
    ``ImageSets/Main/<split>.txt``. ``classes`` (default: the 20 VOC classes) become labels 1..K in
    the given order; an object of another name is dropped and counted. ``difficult`` objects are
    crowd regions: out of training targets and ignored by COCOeval (the crowd rule: a detection on
    them is neither a true nor a false positive). Image ids are positions in the split file, from 1.
    The in-memory ``coco`` ground truth uses the labels as category ids.
    """

    def __init__(self, root: PathLike, split: str = "train", classes: Optional[Sequence[str]] = None,
                 transforms: Optional[DetectionTransform] = None, train: bool = False, skip_bad: bool = True) -> None:
        base = _find_voc_root(Path(root))
        list_file = base / "ImageSets" / "Main" / f"{split}.txt"
        if not list_file.is_file():
            raise FileNotFoundError(f"{list_file} does not exist; --data must be a VOCdevkit/VOC20xx folder (or the "
                                    "folder above it) and the split one of its ImageSets/Main/*.txt.")
        names = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
        classes = list(classes) if classes is not None else list(VOC_DETECTION_CLASSES)
        stats = _new_stats()
        stats["images"] = len(names)
        paths = {i: base / "JPEGImages" / f"{name}.jpg" for i, name in enumerate(names, start=1)}
        missing = _drop_missing(list(paths.items()), skip_bad, stats, f"check {base / 'JPEGImages'} against {list_file}")
        records = []
        for image_id, name in enumerate(names, start=1):
            if image_id in missing:
                continue
            xml_path = base / "Annotations" / f"{name}.xml"
            counts = _new_stats()  # merged only if the whole file can be used
            try:
                height, width, objects = _voc_objects(xml_path, classes, counts)
            except (OSError, ET.ParseError, ValueError, TypeError) as error:
                if not skip_bad:
                    raise DetectionDataError(f"annotation file {xml_path} cannot be used ({error}); fix or remove "
                                             f"{name} from {list_file}, or pass --skip-bad to skip it.") from error
                stats["annotation_files_bad"] += 1
                continue
            counts["images_without_annotations"] = int(counts["annotations"] == 0)
            for key, value in counts.items():
                stats[key] += value
            records.append(_record(image_id, paths[image_id], height, width, objects, False))
        coco = _coco_from_records(records, classes, {r.image_id: r.path.name for r in records})
        super().__init__(records, classes, coco, {k: k for k in range(1, len(classes) + 1)}, stats, transforms, train,
                         skip_bad, False, f"VOC {base.name} {split}")


def _find_voc_root(root: Path) -> Path:
    """``root`` itself if it holds ``Annotations``, else its only ``VOC*`` (or ``VOCdevkit/VOC*``) child that does."""
    if (root / "Annotations").is_dir():
        return root
    found = sorted(p for pattern in ("VOC*", "VOCdevkit/VOC*") for p in root.glob(pattern) if (p / "Annotations").is_dir())
    if len(found) != 1:
        which = "several: " + ", ".join(str(p) for p in found) if found else "none"
        raise FileNotFoundError(f"{root} must be a VOC20xx folder (with Annotations/) or hold exactly one; found "
                                f"{which}. Pass the year's folder.")
    return found[0]


def _first_existing(candidates: Sequence[Path], what: str, option: str) -> Path:
    for path in candidates:
        if path.exists():
            return path
    raise FileNotFoundError(f"no {what} found (looked for {', '.join(str(p) for p in candidates)}); pass it with {option}.")


def build_detection_dataset(kind: str, root: PathLike, split: str, train: bool,
                            transforms: Optional[DetectionTransform] = None, annotation_file: Optional[PathLike] = None,
                            images: Optional[PathLike] = None, classes: Optional[Sequence[str]] = None,
                            skip_bad: bool = True, with_masks: bool = True) -> DetectionDataset:
    """One of ``DATASET_KINDS`` by name.

    ``coco``: the json is ``annotation_file`` or the first of ``root/annotations/instances_<split>2017.json``,
    ``instances_<split>.json``, ``instances.json``; the images ``images`` or the first of
    ``root/<split>2017``, ``root/<split>``, ``root/images``. ``voc``: see ``VocDetectionDataset``
    (``classes`` applies to VOC only; COCO takes its categories from the json). ``transforms`` is
    applied to every sample (see ``detection_transforms.build_detection_train_transform``).
    """
    base = Path(root)
    if not base.exists():
        raise FileNotFoundError(f"data folder {root} does not exist.")
    if kind == "coco":
        annotations = Path(annotation_file) if annotation_file else _first_existing(
            [base / "annotations" / f"instances_{split}2017.json", base / "annotations" / f"instances_{split}.json",
             base / "annotations" / "instances.json"], "COCO annotation file", "--annotations")
        folder = Path(images) if images else _first_existing(
            [base / f"{split}2017", base / split, base / "images"], "image folder", "--images")
        return CocoDetectionDataset(folder, annotations, transforms, train, skip_bad, with_masks)
    if kind == "voc":
        return VocDetectionDataset(base, split, classes, transforms, train, skip_bad)
    raise ValueError(f"unknown detection data set kind {kind!r}; choose one of {', '.join(DATASET_KINDS)}.")


def collate_detection(batch: List[Optional[Tuple[Tensor, Target]]]) -> Tuple[List[Tensor], List[Target]]:
    """Lists of images and targets (images differ in size; the model batches them). ``None`` samples
    (unreadable evaluation images) are dropped, so the lists may be shorter than the batch, or empty."""
    kept = [item for item in batch if item is not None]
    return [item[0] for item in kept], [item[1] for item in kept]
