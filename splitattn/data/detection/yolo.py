"""The YOLO layout (Ultralytics): ``images/`` and ``labels/`` with a ``data.yaml`` naming the classes and splits."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from PIL import Image

from ...errors import DetectionDataError
from ..io import IMAGE_EXTENSIONS, image_size, is_hidden
from .dataset import DetectionDataset
from .records import (
    DetectionTransform,
    PathLike,
    ProblemCounts,
    clean_box,
    drop_missing,
    image_record,
    mask_area,
    new_stats,
    parse_floats,
)


def _yolo_label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder of the path becomes ``labels``, the suffix ``.txt``."""
    parts = list(image.parts)
    if "images" in parts[:-1]:
        parts[len(parts) - 2 - parts[-2::-1].index("images")] = "labels"
    return Path(*parts).with_suffix(".txt")


def _yolo_objects(label_file: Path, width: int, height: int, num_classes: int, stats: ProblemCounts) -> List[tuple]:
    """Cleaned objects of one YOLO label file: ``class cx cy w h`` boxes and ``class x1 y1 x2 y2 ...``
    polygons (normalised to 0..1), polygons kept as COCO polygon segmentations in pixels."""
    objects = []
    lines = label_file.read_text().splitlines() if label_file.is_file() else []
    for line in lines:
        if not line.strip():
            continue
        stats["annotations"] += 1
        fields = line.split()
        values = parse_floats(fields[1:], len(fields) - 1)
        cls = parse_floats(fields[:1], 1)[0]
        if not (math.isfinite(cls) and cls == int(cls) and 0 <= cls < num_classes):
            stats.note("unknown_category", f"class {fields[0]!r} ({label_file}; {num_classes} classes)")
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
        area = mask_area(segmentation, height, width) if segmentation is not None else 0.0
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


def read_data_yaml(root: Path) -> Tuple[Optional[Path], Dict[str, Any]]:
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
        source, spec = read_data_yaml(root)
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
        stats = new_stats()
        stats["images"] = len(images)
        missing = drop_missing(list(enumerate(images, start=1)), skip_bad, stats, f"check the split's list in {source}")
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
                stats.note("images_missing", f"{path} cannot be read ({error})")
                continue
            objects = _yolo_objects(_yolo_label_path(path), width, height, len(names), stats)
            stats["images_without_annotations"] += not objects
            records.append(image_record(image_id, path, height, width, objects, True))
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
