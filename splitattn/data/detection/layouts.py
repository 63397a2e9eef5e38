"""Which detection layout a folder holds (``detect_layout``) and ``build_detection_dataset``, the factory that
builds any of them by name (``--dataset``) or by what it finds."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ...errors import UsageError
from ..io import is_hidden
from .coco import CocoDetectionDataset
from .dataset import DetectionDataset
from .records import DetectionTransform, PathLike
from .voc import VocDetectionDataset, VocFolderDetectionDataset, voc_roots
from .yolo import YoloDetectionDataset, read_data_yaml

DATASET_KINDS = ("coco", "voc", "voc-folder", "yolo")


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
        or read_data_yaml(root)[0] is not None
        or ((root / "images").is_dir() and (root / "labels").is_dir())
    ):
        return "yolo"
    if any((p / "ImageSets" / "Main").is_dir() for p in voc_roots(root)):
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
    raise UsageError(f"unknown detection data set kind {kind!r}; choose one of {', '.join(DATASET_KINDS)}.")
