"""Semantic segmentation data: ADE20K, Cityscapes, Pascal VOC and generic image/label folders.

Every data set is a list of (image, label map) file pairs plus a rule from what the label
files store to training ids: ``0..K-1`` for the K classes, ``255`` (``IGNORE_INDEX``) for
pixels that count nowhere (ADE20K's 0, Cityscapes' void ids, VOC's boundaries, CamVid's
void). Label maps are either index maps (one class id a pixel, grey or palette PNG, mapped
by a lookup table) or colour-coded RGB PNGs (CamVid's original labels, Cityscapes'
``_color.png``) mapped by a palette file, a CSV of ``name,r,g,b`` (``read_palette``). A
stored value or colour the rule does not know is an error naming the file, since it means a
wrong class list, ignore value or palette.

Every check that can run when the data set is built does: a missing label or image, a label
map whose size differs from its image (sizes from the image headers), and every label map's
values or colours (each file decoded once and checked vectorised, on a few threads: about 0.25 s
of CPU time for camvid-mini's 100 label maps of 480x360, 0.1 s of it PNG decoding; ADE20K's
20k maps scale linearly). A bad pair is one error naming the file,
or, with ``skip_bad=True``, the pair is dropped and recorded in ``dataset.skipped``.

Images and label maps are read upright (``splitattn.data.io``): a photo stored rotated with
an EXIF orientation tag is turned as a viewer shows it, and so is a label map carrying a tag.
Labelling tools (CVAT, Label Studio, labelme) show the photo upright and write its mask upright
without a tag; a mask stored rotated with the photo's tag works too. Label values are never
converted, only turned.
"""

from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ..io import IMAGE_SUFFIXES, image_size, is_hidden, open_upright, read_image

IGNORE_INDEX = 255
INVALID = -1  # lookup-table entry of a stored value that no class or ignore value accounts for
PathLike = Union[str, Path]
Pair = Tuple[Path, Path]
JointTransform = Callable[[Image.Image, np.ndarray], Tuple[Tensor, Tensor]]

ADE20K_CLASSES = (
    "wall",
    "building",
    "sky",
    "floor",
    "tree",
    "ceiling",
    "road",
    "bed",
    "windowpane",
    "grass",
    "cabinet",
    "sidewalk",
    "person",
    "earth",
    "door",
    "table",
    "mountain",
    "plant",
    "curtain",
    "chair",
    "car",
    "water",
    "painting",
    "sofa",
    "shelf",
    "house",
    "sea",
    "mirror",
    "rug",
    "field",
    "armchair",
    "seat",
    "fence",
    "desk",
    "rock",
    "wardrobe",
    "lamp",
    "bathtub",
    "railing",
    "cushion",
    "base",
    "box",
    "column",
    "signboard",
    "chest of drawers",
    "counter",
    "sand",
    "sink",
    "skyscraper",
    "fireplace",
    "refrigerator",
    "grandstand",
    "path",
    "stairs",
    "runway",
    "case",
    "pool table",
    "pillow",
    "screen door",
    "stairway",
    "river",
    "bridge",
    "bookcase",
    "blind",
    "coffee table",
    "toilet",
    "flower",
    "book",
    "hill",
    "bench",
    "countertop",
    "stove",
    "palm",
    "kitchen island",
    "computer",
    "swivel chair",
    "boat",
    "bar",
    "arcade machine",
    "hovel",
    "bus",
    "towel",
    "light",
    "truck",
    "tower",
    "chandelier",
    "awning",
    "streetlight",
    "booth",
    "television receiver",
    "airplane",
    "dirt track",
    "apparel",
    "pole",
    "land",
    "bannister",
    "escalator",
    "ottoman",
    "bottle",
    "buffet",
    "poster",
    "stage",
    "van",
    "ship",
    "fountain",
    "conveyer belt",
    "canopy",
    "washer",
    "plaything",
    "swimming pool",
    "stool",
    "barrel",
    "basket",
    "waterfall",
    "tent",
    "bag",
    "minibike",
    "cradle",
    "oven",
    "ball",
    "food",
    "step",
    "tank",
    "trade name",
    "microwave",
    "pot",
    "animal",
    "bicycle",
    "lake",
    "dishwasher",
    "screen",
    "blanket",
    "sculpture",
    "hood",
    "sconce",
    "vase",
    "traffic light",
    "tray",
    "ashcan",
    "fan",
    "pier",
    "crt screen",
    "plate",
    "monitor",
    "bulletin board",
    "shower",
    "radiator",
    "glass",
    "clock",
    "flag",
)
# Cityscapes label id -> train id for the 19 evaluated classes; every other id (0..33) is ignored.
CITYSCAPES_TRAIN_IDS = {
    7: ("road", 0),
    8: ("sidewalk", 1),
    11: ("building", 2),
    12: ("wall", 3),
    13: ("fence", 4),
    17: ("pole", 5),
    19: ("traffic light", 6),
    20: ("traffic sign", 7),
    21: ("vegetation", 8),
    22: ("terrain", 9),
    23: ("sky", 10),
    24: ("person", 11),
    25: ("rider", 12),
    26: ("car", 13),
    27: ("truck", 14),
    28: ("bus", 15),
    31: ("train", 16),
    32: ("motorcycle", 17),
    33: ("bicycle", 18),
}
CITYSCAPES_NUM_LABEL_IDS = 34
VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
CAMVID_CLASSES = (
    "sky",
    "building",
    "pole",
    "road",
    "pavement",
    "tree",
    "sign/symbol",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
)
CAMVID_IGNORE_VALUE = 11
DATASET_KINDS = ("ade20k", "cityscapes", "voc", "folder")


class SegmentationDataError(ValueError):
    """A data set whose files cannot be paired or whose label maps do not fit the class list."""


def identity_lut(num_classes: int, ignore_values: Sequence[int] = ()) -> np.ndarray:
    """Lookup table for label maps that store class ids directly: ``v -> v`` for ``v < num_classes``,
    each of ``ignore_values`` -> ``IGNORE_INDEX``, anything else invalid."""
    if not 0 < num_classes <= IGNORE_INDEX:
        raise ValueError(
            f"a class list must have 1..{IGNORE_INDEX} classes ({IGNORE_INDEX} marks ignored pixels), "
            f"got {num_classes}."
        )
    lut = np.full(256, INVALID, dtype=np.int16)
    lut[:num_classes] = np.arange(num_classes)
    for value in ignore_values:
        if 0 <= value < num_classes:
            raise ValueError(
                f"the ignore value {value} is also a class id (classes are 0..{num_classes - 1}); "
                "pick a value outside the class list."
            )
        if not 0 <= value <= 255:
            raise ValueError(f"the ignore value must be in 0..255 (label maps are 8-bit), got {value}.")
        lut[value] = IGNORE_INDEX
    return lut


INDEX_MODES = ("L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N", "1")
COLOUR_MODES = ("RGB", "RGBA", "P")
IGNORE_NAME = "ignore"  # palette rows of this name map their colour (or, with r,g,b = *, every other) to IGNORE_INDEX
BUILD_CHECK_THREADS = 8


def read_label(path: Path) -> np.ndarray:
    """The stored values of a single-channel label map (grey or palette PNG) as an (H, W) integer array,
    upright (EXIF orientation applied), never converted. Raises ``SegmentationDataError`` for other modes."""
    label = open_upright(path)
    if label.mode not in INDEX_MODES:
        raise SegmentationDataError(
            f"label map {path} is {label.mode}, not a single-channel image of class ids; colour-coded label maps "
            "need their palette, a CSV of name,r,g,b (build_dataset(..., palette=...))."
        )
    values = np.asarray(label)
    return values.astype(np.uint8) if values.dtype == bool else values  # mode "1": ids 0 and 1


def _colour_codes(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 colours -> (...) int64 codes ``r << 16 | g << 8 | b``."""
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


@dataclass(frozen=True)
class LabelPalette:
    """Colours of a colour-coded label map -> training ids (``read_palette`` builds it).

    ``classes``: class names in id order; ``codes``: sorted colour codes (``r << 16 | g << 8 | b``);
    ``ids``: the training id of each code (``IGNORE_INDEX`` for ignore rows); ``ignore_unknown``: colours
    not in the palette are ignored rather than an error; ``source``: the palette file, for messages.
    """

    classes: Tuple[str, ...]
    codes: np.ndarray
    ids: np.ndarray
    ignore_unknown: bool
    source: str

    def decode(self, label: Image.Image, path: Path) -> np.ndarray:
        """(H, W) uint8 training ids of a colour-coded ``label`` image read from ``path``.

        Raises ``SegmentationDataError`` naming the file, the unknown colour(s) and the first pixel (x, y)
        holding one, unless the palette ignores unknown colours.
        """
        if label.mode not in COLOUR_MODES:
            raise SegmentationDataError(
                f"label map {path} is {label.mode}, not a colour image, but the data set maps colours with the "
                f"palette {self.source}; give index label maps without a palette."
            )
        codes = _colour_codes(np.asarray(label.convert("RGB")))
        position = np.minimum(np.searchsorted(self.codes, codes), len(self.codes) - 1)
        known = self.codes[position] == codes
        target = self.ids[position]
        if not known.all():
            if not self.ignore_unknown:
                y, x = np.unravel_index(int(np.argmin(known)), known.shape)
                unknown = [((int(c) >> 16) & 255, (int(c) >> 8) & 255, int(c) & 255) for c in np.unique(codes[~known])]
                raise SegmentationDataError(
                    f"label map {path} has colour(s) {unknown[:5]}{' ...' if len(unknown) > 5 else ''} that are not "
                    f"in the palette {self.source} (first at pixel x={x}, y={y}); add each colour as a row "
                    f"name,r,g,b, or a row {IGNORE_NAME},*,*,* to ignore colours the palette does not list."
                )
            target = np.where(known, target, IGNORE_INDEX)
        return target.astype(np.uint8)


def read_palette(path: PathLike) -> LabelPalette:
    """A palette file: a CSV of ``name,r,g,b`` rows (header optional, ``#`` comments), one colour a row.

    Class ids follow the order in which names first appear; several colours may share a name (one class).
    Rows named ``ignore`` map their colour to ``IGNORE_INDEX``; the row ``ignore,*,*,*`` ignores every colour
    not listed (else an unknown colour is an error). Raises ``SegmentationDataError`` naming the file and line
    for a malformed row, a value outside 0..255 or a colour listed twice.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = [
            (number, [cell.strip() for cell in row])
            for number, row in enumerate(csv.reader(handle), start=1)
            if row and any(cell.strip() for cell in row) and not row[0].strip().startswith("#")
        ]
    if rows and not (rows[0][1][1:2] and (rows[0][1][1].isdigit() or rows[0][1][1] == "*")):
        rows = rows[1:]  # a header such as name,r,g,b
    classes: List[str] = []
    by_code: Dict[int, Tuple[int, int]] = {}  # code -> (training id, line)
    ignore_unknown = False
    for number, row in rows:
        where = f"palette {path}, line {number}"
        if len(row) != 4 or not row[0]:
            raise SegmentationDataError(f"{where}: expected name,r,g,b, got {','.join(row)!r}.")
        name, channels = row[0], row[1:]
        if name.lower() == IGNORE_NAME and channels == ["*", "*", "*"]:
            ignore_unknown = True
            continue
        if not all(value.isdigit() and int(value) <= 255 for value in channels):
            raise SegmentationDataError(f"{where}: r,g,b must be integers 0..255, got {','.join(channels)!r}.")
        code = int(_colour_codes(np.array([int(v) for v in channels])))
        if code in by_code:
            raise SegmentationDataError(
                f"{where}: colour ({','.join(channels)}) is already on line "
                f"{by_code[code][1]}; each colour may stand for one class only."
            )
        if name.lower() == IGNORE_NAME:
            by_code[code] = (IGNORE_INDEX, number)
            continue
        if name not in classes:
            classes.append(name)
        by_code[code] = (classes.index(name), number)
    if not classes:
        raise SegmentationDataError(f"palette {path} names no class; expected rows of name,r,g,b.")
    if len(classes) > IGNORE_INDEX:
        raise SegmentationDataError(f"palette {path} has {len(classes)} classes; at most {IGNORE_INDEX} fit.")
    codes = np.array(sorted(by_code), dtype=np.int64)
    ids = np.array([by_code[int(code)][0] for code in codes], dtype=np.int64)
    return LabelPalette(tuple(classes), codes, ids, ignore_unknown, str(path))


class SegmentationDataset(Dataset):
    """Image/label-map pairs mapped to training ids (``IGNORE_INDEX`` for ignored pixels).

    Label maps store class ids mapped by ``lut`` (index maps), or colours mapped by ``palette``
    (colour-coded maps; ``lut`` is then unused). Every pair is checked when the data set is built (sizes,
    label values or colours; see the module docstring). Images are read with ``channels`` channels.
    ``dataset[i]`` is ``transform(image, target)`` (default: the PIL image and the (H, W) uint8 target
    array); ``load(i)`` skips the transform.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        classes: Sequence[str],
        lut: Optional[np.ndarray],
        transform: Optional[JointTransform] = None,
        skip_bad: bool = False,
        name: str = "",
        channels: int = 3,
        palette: Optional[LabelPalette] = None,
    ) -> None:
        if lut is None and palette is None:
            raise ValueError(
                "a segmentation data set needs a lookup table (index label maps) or a palette "
                "(colour-coded label maps)."
            )
        self.classes: List[str] = list(classes)
        self.lut = lut
        self.palette = palette
        self.transform = transform
        self.name = name
        self.channels = channels
        self.skipped: List[str] = []
        self.pairs: List[Pair] = self._check(list(pairs), skip_bad)
        if not self.pairs:
            raise SegmentationDataError(
                f"{name or 'the data set'} has no usable image/label pairs"
                + (f" ({len(self.skipped)} skipped)." if self.skipped else ".")
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _problem(self, pair: Pair) -> Optional[str]:
        """What is wrong with one pair (``None`` if nothing): image header unreadable, label map unreadable or
        holding values/colours outside the class list, or sizes that differ. Decodes the label map only."""
        image_path, label_path = pair
        try:
            width, height = image_size(image_path)
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            return f"image {image_path} cannot be read ({error})"
        try:
            target = self.target(label_path)
        except SegmentationDataError as error:
            return str(error)
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            return f"label map {label_path} cannot be read ({error})"
        if target.shape != (height, width):
            return (
                f"label map {label_path} is {target.shape[1]}x{target.shape[0]} but its image {image_path} is "
                f"{width}x{height}; fix or remove the pair"
            )
        return None

    def _check(self, pairs: List[Pair], skip_bad: bool) -> List[Pair]:
        """The pairs that pass ``_problem``; the others are an error or, with ``skip_bad``, recorded in
        ``skipped``. Label maps are decoded on up to ``BUILD_CHECK_THREADS`` threads (PIL and numpy release
        the GIL while decoding and mapping)."""
        workers = max(1, min(BUILD_CHECK_THREADS, os.cpu_count() or 1, len(pairs)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            problems = list(pool.map(self._problem, pairs))
        bad = [problem for problem in problems if problem is not None]
        if bad and not skip_bad:
            more = f" ({len(bad) - 1} more pair(s) have problems)" if len(bad) > 1 else ""
            raise SegmentationDataError(
                f"{bad[0].rstrip('.')}{more}; pass --skip-bad (skip_bad=True) to skip such pairs."
            )
        self.skipped.extend(bad)
        return [pair for pair, problem in zip(pairs, problems) if problem is None]

    def target(self, label_path: Path) -> np.ndarray:
        """The (H, W) uint8 training ids of one label map (upright), ``IGNORE_INDEX`` where ignored.

        Raises ``SegmentationDataError`` naming the file for a value (index maps) or colour (palette) that no
        class or ignore rule accounts for, or a label map of the wrong kind (colour vs index)."""
        if self.palette is not None:
            return self.palette.decode(open_upright(label_path), label_path)
        stored = read_label(label_path)
        # the values present, vectorised (a histogram for unsigned maps, a sort otherwise), checked once each
        values = np.flatnonzero(np.bincount(stored.ravel())) if stored.dtype.kind in "ub" else np.unique(stored)
        in_table = (values >= 0) & (values < len(self.lut))
        bad = values[~in_table].tolist() + [v for v in values[in_table].tolist() if self.lut[v] == INVALID]
        if bad:
            known = np.flatnonzero(self.lut != INVALID)
            raise SegmentationDataError(
                f"label map {label_path} holds value(s) {sorted(bad)[:10]} that are neither one of the "
                f"{self.num_classes} classes nor an ignore value (accepted stored values: {_ranges(known)}); "
                "check the class list and the ignore value (--classes, --ignore-value)."
            )
        target = self.lut[stored]
        return target.astype(np.uint8)

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> Tuple[Image.Image, np.ndarray]:
        """The image (``channels`` channels, upright) and its (H, W) uint8 target of training ids,
        ``IGNORE_INDEX`` where ignored."""
        image_path, label_path = self.pairs[index]
        target = self.target(label_path)
        image = read_image(image_path, self.channels)
        if image.size != (target.shape[1], target.shape[0]):
            raise SegmentationDataError(
                f"label map {label_path} is {target.shape[1]}x{target.shape[0]} but its "
                f"image {image_path} is {image.size[0]}x{image.size[1]} (changed since the "
                "data set was built?)."
            )
        return image, target

    def __getitem__(self, index: int):
        image, target = self.load(index)
        if self.transform is None:
            return image, target
        return self.transform(image, target)


def _ranges(values: np.ndarray) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    parts, start = [], None
    for i, value in enumerate(values.tolist()):
        if start is None:
            start = value
        if i + 1 == len(values) or values[i + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ", ".join(parts)


def _pair_by_stem(
    images: Dict[str, Path], labels: Dict[str, Path], where: str, skip_bad: bool
) -> Tuple[List[Pair], List[str]]:
    """Pairs of files with the same key; unmatched files are an error or, with ``skip_bad``, skipped."""
    missing = [f"image {images[k]} has no label map" for k in sorted(set(images) - set(labels))]
    missing += [f"label map {labels[k]} has no image" for k in sorted(set(labels) - set(images))]
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
    dataset = SegmentationDataset(pairs, classes, lut, transform, skip_bad, name, channels, palette)
    dataset.skipped[:0] = missing
    return dataset


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
            raise ValueError(
                "a folder data set of index label maps needs its class list (--classes: names "
                "separated by commas, or a text file with one name a line), in label-id order."
            )
        ignore = () if ignore_value is None else (int(ignore_value),)
        return _build(
            pairs, missing, classes, identity_lut(len(classes), ignore), transform, skip_bad, str(base), channels
        )
    colours = read_palette(palette)
    if classes and list(classes) != list(colours.classes):
        raise ValueError(
            f"the class list {list(classes)} differs from the palette {palette}'s classes "
            f"{list(colours.classes)}; give one of them (the palette's row order is the class order)."
        )
    if ignore_value is not None:
        raise ValueError(
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
        raise ValueError(f"unknown data set kind {kind!r}; choose one of {', '.join(DATASET_KINDS)}.")
    if palette is not None:
        raise ValueError(f"a palette is for colour-coded folder data sets; {kind} label maps store class ids.")
    return builders[kind](root, split, transform, skip_bad, channels)


def collate_eval(batch: List[Tuple[Tensor, Tensor]]) -> Tuple[List[Tensor], List[Tensor]]:
    """Keep evaluation images as lists: they differ in size and are predicted one by one."""
    return [item[0] for item in batch], [item[1] for item in batch]
