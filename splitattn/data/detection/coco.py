"""The COCO layout: an instances json (checked when read) over a folder of images."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from pycocotools.coco import COCO

from ...errors import DetectionDataError
from .dataset import DetectionDataset
from .records import (
    DetectionTransform,
    PathLike,
    clean_box,
    drop_missing,
    image_record,
    mask_area,
    new_stats,
    parse_floats,
    usable_segmentation,
)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_coco_json(annotation_file: Path) -> COCO:
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
    malformed file (see ``load_coco_json``).
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
        coco = load_coco_json(annotation_file)
        class_names, contiguous_to_coco = _class_mapping(
            {i: c["name"] for i, c in coco.cats.items()}, classes, str(annotation_file)
        )
        coco_to_contiguous = {coco_id: label for label, coco_id in contiguous_to_coco.items() if coco_id in coco.cats}
        stats = new_stats()
        images = [coco.imgs[image_id] for image_id in sorted(coco.imgs)]
        stats["images"] = len(images)
        missing = drop_missing(
            [(info["id"], root_images / info["file_name"]) for info in images],
            skip_bad,
            stats,
            f"check --images {root_images} and the file_name entries of {annotation_file}",
            keep=not train,
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
                    stats.note("unknown_category", f"category_id {ann.get('category_id')!r} ({info['file_name']})")
                    continue
                x, y, w, h = parse_floats(ann.get("bbox"), 4)
                box = clean_box([x, y, x + w, y + h], width, height, stats)
                if box is None:
                    continue
                crowd = int(bool(ann.get("iscrowd", 0)))
                stats["crowd_regions"] += crowd
                segmentation = usable_segmentation(ann.get("segmentation"), height, width)
                stats["masks_from_box"] += segmentation is None
                area = parse_floats([ann.get("area")], 1)[0]
                if not (math.isfinite(area) and area > 0):  # converters often leave it out: COCO's own definition
                    area = (mask_area(segmentation, height, width) if segmentation is not None else 0.0) or (
                        box[2] - box[0]
                    ) * (box[3] - box[1])
                objects.append((box, coco_to_contiguous[ann["category_id"]], crowd, area, segmentation))
            records.append(image_record(info["id"], root_images / info["file_name"], height, width, objects, True))
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
