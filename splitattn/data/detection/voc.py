"""The Pascal VOC layouts: a VOCdevkit tree, and VOC XML files as labelImg, CVAT and Roboflow export them."""

from __future__ import annotations

import contextlib
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ...errors import DetectionDataError
from ..io import IMAGE_EXTENSIONS, is_hidden
from ..labels import VOC_CLASSES
from .dataset import DetectionDataset
from .records import (
    DetectionTransform,
    ImageRecord,
    PathLike,
    ProblemCounts,
    clean_box,
    drop_missing,
    image_record,
    new_stats,
    parse_floats,
)

VOC_DETECTION_CLASSES = VOC_CLASSES[1:]


def _voc_objects(
    xml_path: Path, classes: Sequence[str], stats: ProblemCounts
) -> Tuple[int, int, List[tuple], str, str]:
    """(height, width, cleaned objects, ``<filename>``, ``<path>``) of one VOC XML file; boxes go from VOC's
    1-based inclusive pixel indices to x1 y1 x2 y2 coordinates (xmin - 1, ymin - 1, xmax, ymax), as
    detectron2 does."""
    root = ET.parse(xml_path).getroot()
    size = root.find("size")
    width, height = (
        int(v) if math.isfinite(v) else 0
        for v in parse_floats([size.findtext("width"), size.findtext("height")] if size is not None else [], 2)
    )
    if width <= 0 or height <= 0:
        raise ValueError("no image size (<size><width>, <height>)")
    objects = []
    for obj in root.iter("object"):
        stats["annotations"] += 1
        name = (obj.findtext("name") or "").strip()
        if name not in classes:
            stats.note("unknown_category", f"{name!r} ({xml_path})")
            continue
        bndbox = obj.find("bndbox")
        xmin, ymin, xmax, ymax = parse_floats(
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
    entries: List[Tuple[Path, List[Path]]],
    classes: Sequence[str],
    skip_bad: bool,
    stats: ProblemCounts,
    fix: str,
    keep_missing: bool,
) -> List[ImageRecord]:
    """Records of ``(xml file, image folders)`` entries, image ids 1..N in their order. An XML file that
    cannot be used is counted (``skip_bad``) or an error; the image is the first of ``_image_candidates``
    that exists, and a missing one is counted or an error naming the candidates (``keep_missing``, for an
    evaluation set: counted and kept, see ``records.drop_missing``)."""
    parsed = []
    for image_id, (xml_path, folders) in enumerate(entries, start=1):
        counts = new_stats()  # merged only if the whole file and its image can be used
        try:
            height, width, objects, filename, recorded = _voc_objects(xml_path, classes, counts)
        except (OSError, ET.ParseError, ValueError, TypeError) as error:
            if not skip_bad:
                raise DetectionDataError(
                    f"annotation file {xml_path} cannot be used ({error}); fix it or {fix}, or pass "
                    "--skip-bad to skip it."
                ) from error
            stats.note("annotation_files_bad", f"{xml_path}: {error}")
            continue
        tried = _image_candidates(folders, filename, xml_path.stem, recorded)
        path = next((p for p in tried if p.is_file()), tried[0])
        parsed.append((image_id, path, tried, height, width, objects, counts))
    missing = drop_missing(
        [(p[0], p[1]) for p in parsed],
        skip_bad,
        stats,
        f"check the XML files' <filename> against the images, or {fix}",
        {p[0]: p[2] for p in parsed},
        keep=keep_missing,
    )
    records = []
    for image_id, path, _, height, width, objects, counts in parsed:
        if image_id in missing:
            continue
        counts["images_without_annotations"] = int(counts["annotations"] == 0)
        stats.merge(counts)
        records.append(image_record(image_id, path, height, width, objects, False))
    return records


class _VocXmlDataset(DetectionDataset):
    """What both VOC layouts share: label k (the k-th class) is category k of the ground truth; boxes, no masks."""

    def __init__(
        self,
        records: List[ImageRecord],
        classes: Sequence[str],
        stats: ProblemCounts,
        transforms: Optional[DetectionTransform],
        train: bool,
        skip_bad: bool,
        name: str,
        classes_from_files: bool = False,
    ) -> None:
        numbered = {k: k for k in range(1, len(classes) + 1)}
        super().__init__(
            records, classes, numbered, stats, transforms, train, skip_bad, False, name, classes_from_files
        )


class VocDetectionDataset(_VocXmlDataset):
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
        stats = new_stats()
        records = _voc_records(
            [(base / "Annotations" / f"{name}.xml", [base / "JPEGImages"]) for name in names],
            classes,
            skip_bad,
            stats,
            f"remove the name from {list_file}",
            keep_missing=not train,
        )
        stats["images"] = len(names)
        super().__init__(records, classes, stats, transforms, train, skip_bad, f"VOC {base.name} {split}")


def _find_voc_root(root: Path) -> Path:
    """``root`` itself if it holds ``Annotations``, else its only ``VOC*`` (or ``VOCdevkit/VOC*``) child that does."""
    found = voc_roots(root)
    if len(found) != 1:
        which = "several: " + ", ".join(str(p) for p in found) if found else "none"
        raise FileNotFoundError(
            f"{root} must be a VOC20xx folder (with Annotations/) or hold exactly one; found "
            f"{which}. Pass the year's folder."
        )
    return found[0]


def voc_roots(root: Path) -> List[Path]:
    if (root / "Annotations").is_dir():
        return [root]
    return sorted(
        p for pattern in ("VOC*", "VOCdevkit/VOC*") for p in root.glob(pattern) if (p / "Annotations").is_dir()
    )


def _xml_files(folder: Path) -> List[Path]:
    return sorted(p for p in folder.rglob("*.xml") if not is_hidden(p, folder))


class VocFolderDetectionDataset(_VocXmlDataset):
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
        stats = new_stats()
        records = _voc_records(
            [
                (x, [x.parent, *extra, x.parent.parent / "images", x.parent.parent / "JPEGImages", root / "images"])
                for x in xml_files
            ],
            classes,
            skip_bad,
            stats,
            fix,
            keep_missing=not train,
        )
        stats["images"] = len(xml_files)
        name = f"VOC folder {root.name} {split}"
        super().__init__(records, classes, stats, transforms, train, skip_bad, name, classes_from_files)
