"""The segmentation data set layouts: ADE20K, Cityscapes, Pascal VOC and a generic image/label folder pair,
each a list of image/label-map files plus the rule from stored values to training ids, and
``build_dataset`` choosing one by name (``--dataset``)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ...errors import SegmentationDataError, UsageError
from ..checks import Problem
from ..io import IMAGE_SUFFIXES, is_hidden
from ..labels import ADE20K_CLASSES, CITYSCAPES_NUM_LABEL_IDS, CITYSCAPES_TRAIN_IDS, VOC_CLASSES
from .datasets import JointTransform, Pair, PathLike, SegmentationDataset
from .label_maps import IGNORE_INDEX, IGNORE_NAME, INVALID, LabelPalette, identity_lut, read_palette

DATASET_KINDS = ("ade20k", "cityscapes", "voc", "folder")


def _pair_by_stem(
    images: Dict[str, Path], labels: Dict[str, Path], where: str, skip_bad: bool
) -> Tuple[List[Pair], List[str]]:
    """Pairs of files with the same key; unmatched files are an error or, with ``skip_bad``, skipped."""
    missing = [
        Problem("images without a label map", f"image {images[k]} has no label map")
        for k in sorted(set(images) - set(labels))
    ]
    missing += [
        Problem("label maps without an image", f"label map {labels[k]} has no image")
        for k in sorted(set(labels) - set(images))
    ]
    if missing and not skip_bad:
        more = f" (and {len(missing) - 1} more unmatched files)" if len(missing) > 1 else ""
        raise SegmentationDataError(
            f"in {where}: {missing[0]}{more}; add the missing files or pass --skip-bad to skip unmatched ones."
        )
    pairs = [(images[k], labels[k]) for k in sorted(set(images) & set(labels))]
    return pairs, missing


def _files(folder: Path, suffixes: Sequence[str], strip: str = "") -> Dict[str, Path]:
    """Files under ``folder`` (recursively) keyed by their relative path without suffix and ``strip``;
    hidden files and folders (``.DS_Store``, ``._x.png``, ``.ipynb_checkpoints/``) are left out."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder.")
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in suffixes and not is_hidden(path, folder) and path.is_file():
            key = str(path.relative_to(folder).with_suffix(""))
            found[key[: len(key) - len(strip)] if strip and key.endswith(strip) else key] = path
    return found


def _build(
    pairs: List[Pair],
    missing: List[str],
    classes: Sequence[str],
    lut: Optional[np.ndarray],
    transform: Optional[JointTransform],
    skip_bad: bool,
    name: str,
    channels: int,
    palette: Optional[LabelPalette] = None,
) -> SegmentationDataset:
    return SegmentationDataset(pairs, classes, lut, transform, skip_bad, name, channels, palette, missing)


def ade20k_dataset(
    root: PathLike,
    split: str = "train",
    transform: Optional[JointTransform] = None,
    skip_bad: bool = False,
    channels: int = 3,
) -> SegmentationDataset:
    """ADE20K SceneParsing (``ADEChallengeData2016/{images,annotations}/{training,validation}``).

    150 classes: stored 0 ("other") is ignored, 1..150 become 0..149.
    """
    base = Path(root)
    if not (base / "images").is_dir() and (base / "ADEChallengeData2016").is_dir():
        base = base / "ADEChallengeData2016"
    folder = {"train": "training", "val": "validation"}.get(split, split)
    images = _files(base / "images" / folder, IMAGE_SUFFIXES)
    labels = _files(base / "annotations" / folder, (".png",))
    pairs, missing = _pair_by_stem(images, labels, str(base), skip_bad)
    lut = np.full(256, INVALID, dtype=np.int16)
    lut[0] = IGNORE_INDEX
    lut[1:151] = np.arange(150)
    return _build(pairs, missing, ADE20K_CLASSES, lut, transform, skip_bad, f"ADE20K {folder}", channels)


def cityscapes_dataset(
    root: PathLike,
    split: str = "train",
    transform: Optional[JointTransform] = None,
    skip_bad: bool = False,
    channels: int = 3,
) -> SegmentationDataset:
    """Cityscapes fine annotations (``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
    ``gtFine/<split>/<city>/*_gtFine_labelIds.png``): label ids 0..33 become the 19 train ids."""
    base = Path(root)
    images = _files(base / "leftImg8bit" / split, (".png",), strip="_leftImg8bit")
    labels = {
        k: v
        for k, v in _files(base / "gtFine" / split, (".png",), strip="_gtFine_labelIds").items()
        if v.name.endswith("_gtFine_labelIds.png")
    }
    pairs, missing = _pair_by_stem(images, labels, str(base), skip_bad)
    lut = np.full(256, INVALID, dtype=np.int16)
    lut[:CITYSCAPES_NUM_LABEL_IDS] = IGNORE_INDEX
    for label_id, (_, train_id) in CITYSCAPES_TRAIN_IDS.items():
        lut[label_id] = train_id
    classes = [name for name, _ in sorted(CITYSCAPES_TRAIN_IDS.values(), key=lambda item: item[1])]
    return _build(pairs, missing, classes, lut, transform, skip_bad, f"Cityscapes {split}", channels)


def voc_dataset(
    root: PathLike,
    split: str = "train",
    transform: Optional[JointTransform] = None,
    skip_bad: bool = False,
    channels: int = 3,
) -> SegmentationDataset:
    """Pascal VOC 2012 segmentation (``VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}``):
    21 classes (0 = background), 255 marks object boundaries and is ignored."""
    base = Path(root)
    for candidate in (base, base / "VOC2012", base / "VOCdevkit" / "VOC2012"):
        if (candidate / "SegmentationClass").is_dir():
            base = candidate
            break
    list_file = base / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not list_file.is_file():
        raise FileNotFoundError(
            f"{list_file} does not exist; --data must be VOCdevkit/VOC2012 (or a folder above it) "
            f"and the split one of its ImageSets/Segmentation/*.txt."
        )
    names = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
    images = {n: base / "JPEGImages" / f"{n}.jpg" for n in names}
    labels = {n: base / "SegmentationClass" / f"{n}.png" for n in names}
    images = {n: p for n, p in images.items() if p.is_file()}
    labels = {n: p for n, p in labels.items() if p.is_file()}
    pairs, missing = _pair_by_stem(images, labels, str(list_file), skip_bad)
    unlisted = [
        f"{n} is listed in {list_file.name} but has neither image nor label map"
        for n in names
        if n not in images and n not in labels
    ]
    if unlisted and not skip_bad:
        raise SegmentationDataError(f"{unlisted[0]}; pass --skip-bad to skip such entries.")
    return _build(
        pairs,
        missing + unlisted,
        VOC_CLASSES,
        identity_lut(len(VOC_CLASSES), (IGNORE_INDEX,)),
        transform,
        skip_bad,
        f"VOC {split}",
        channels,
    )


def folder_dataset(
    root: PathLike,
    split: str,
    classes: Optional[Sequence[str]],
    ignore_value: Optional[int] = None,
    transform: Optional[JointTransform] = None,
    skip_bad: bool = False,
    channels: int = 3,
    palette: Optional[PathLike] = None,
) -> SegmentationDataset:
    """A generic ``<root>/<split>/images/*`` + ``<root>/<split>/labels/*.png`` pair of folders, matched by
    file name. Index label maps store class ids ``0..len(classes)-1`` and ``ignore_value`` for void pixels;
    with ``palette`` (a CSV of ``name,r,g,b``, see ``read_palette``) the label maps are colour-coded, the
    classes are the palette's (``classes``, if given, must equal them) and ``ignore_value`` is not used.
    """
    base = Path(root) / split
    images = _files(base / "images", IMAGE_SUFFIXES)
    labels = _files(base / "labels", (".png",))
    pairs, missing = _pair_by_stem(images, labels, str(base), skip_bad)
    if palette is None:
        if not classes:
            raise UsageError(
                "a folder data set of index label maps needs its class list (--classes: names "
                "separated by commas, or a text file with one name a line), in label-id order."
            )
        ignore = () if ignore_value is None else (int(ignore_value),)
        return _build(
            pairs, missing, classes, identity_lut(len(classes), ignore), transform, skip_bad, str(base), channels
        )
    colours = read_palette(palette)
    if classes and list(classes) != list(colours.classes):
        raise UsageError(
            f"the class list {list(classes)} differs from the palette {palette}'s classes "
            f"{list(colours.classes)}; give one of them (the palette's row order is the class order)."
        )
    if ignore_value is not None:
        raise UsageError(
            f"with a palette, ignored colours are palette rows named {IGNORE_NAME!r}; "
            "--ignore-value is for index label maps."
        )
    return _build(pairs, missing, colours.classes, None, transform, skip_bad, str(base), channels, colours)


def parse_classes(spec: Union[None, str, Sequence[str]]) -> Optional[List[str]]:
    """Class names from a list, a text file (one name a line) or a comma-separated string."""
    if spec is None or isinstance(spec, (list, tuple)):
        return None if spec is None else [str(name) for name in spec]
    path = Path(spec)
    if path.is_file():
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [name.strip() for name in str(spec).split(",") if name.strip()]


def build_dataset(
    kind: str,
    root: PathLike,
    split: str,
    transform: Optional[JointTransform] = None,
    classes: Union[None, str, Sequence[str]] = None,
    ignore_value: Optional[int] = None,
    skip_bad: bool = False,
    channels: int = 3,
    palette: Optional[PathLike] = None,
) -> SegmentationDataset:
    """One of ``DATASET_KINDS`` by name; ``folder`` needs ``classes`` (and usually ``ignore_value``) for
    index label maps, or ``palette`` (a CSV of ``name,r,g,b``) for colour-coded ones. Images are read with
    ``channels`` channels (the model's ``in_chans``). Raises ``FileNotFoundError`` for a missing folder,
    ``ValueError``/``SegmentationDataError`` naming the file for anything the build-time checks find."""
    if not Path(root).exists():
        raise FileNotFoundError(
            f"data folder {root} does not exist; --data must hold <split>/images and "
            "<split>/labels (--dataset folder), or be an ADE20K, Cityscapes or VOC root."
        )
    if kind == "folder":
        return folder_dataset(root, split, parse_classes(classes), ignore_value, transform, skip_bad, channels, palette)
    builders = {"ade20k": ade20k_dataset, "cityscapes": cityscapes_dataset, "voc": voc_dataset}
    if kind not in builders:
        raise UsageError(f"unknown data set kind {kind!r}; choose one of {', '.join(DATASET_KINDS)}.")
    if palette is not None:
        raise UsageError(f"a palette is for colour-coded folder data sets; {kind} label maps store class ids.")
    return builders[kind](root, split, transform, skip_bad, channels)
