"""Semantic segmentation data: ADE20K, Cityscapes, Pascal VOC and generic image/label folders.

Every data set is a list of (image, label map) file pairs plus a lookup table from the
values stored in the label PNGs to training ids: ``0..K-1`` for the K classes, ``255``
(``IGNORE_INDEX``) for pixels that count nowhere (ADE20K's 0, Cityscapes' void ids,
VOC's boundaries, CamVid's void). A stored value the table does not know is an error
that names the file, since it means a wrong class list or ignore value.

Pairing problems (a missing label or image, a label map whose size differs from its
image) are found when the data set is built: one error naming the file, or, with
``skip_bad=True``, the pair is dropped and recorded in ``dataset.skipped``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ..utils.inputs import IMAGE_SUFFIXES

IGNORE_INDEX = 255
INVALID = -1  # lookup-table entry of a stored value that no class or ignore value accounts for
PathLike = Union[str, Path]
Pair = Tuple[Path, Path]
JointTransform = Callable[[Image.Image, np.ndarray], Tuple[Tensor, Tensor]]

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher",
    "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier",
    "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)
# Cityscapes label id -> train id for the 19 evaluated classes; every other id (0..33) is ignored.
CITYSCAPES_TRAIN_IDS = {
    7: ("road", 0), 8: ("sidewalk", 1), 11: ("building", 2), 12: ("wall", 3), 13: ("fence", 4), 17: ("pole", 5),
    19: ("traffic light", 6), 20: ("traffic sign", 7), 21: ("vegetation", 8), 22: ("terrain", 9), 23: ("sky", 10),
    24: ("person", 11), 25: ("rider", 12), 26: ("car", 13), 27: ("truck", 14), 28: ("bus", 15), 31: ("train", 16),
    32: ("motorcycle", 17), 33: ("bicycle", 18),
}
CITYSCAPES_NUM_LABEL_IDS = 34
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign/symbol", "fence", "car", "pedestrian", "bicyclist",
)
CAMVID_IGNORE_VALUE = 11
DATASET_KINDS = ("ade20k", "cityscapes", "voc", "folder")


class SegmentationDataError(ValueError):
    """A data set whose files cannot be paired or whose label maps do not fit the class list."""


def identity_lut(num_classes: int, ignore_values: Sequence[int] = ()) -> np.ndarray:
    """Lookup table for label maps that store class ids directly: ``v -> v`` for ``v < num_classes``,
    each of ``ignore_values`` -> ``IGNORE_INDEX``, anything else invalid."""
    if not 0 < num_classes <= IGNORE_INDEX:
        raise ValueError(f"a class list must have 1..{IGNORE_INDEX} classes ({IGNORE_INDEX} marks ignored pixels), "
                         f"got {num_classes}.")
    lut = np.full(256, INVALID, dtype=np.int16)
    lut[:num_classes] = np.arange(num_classes)
    for value in ignore_values:
        if 0 <= value < num_classes:
            raise ValueError(f"the ignore value {value} is also a class id (classes are 0..{num_classes - 1}); "
                             "pick a value outside the class list.")
        if not 0 <= value <= 255:
            raise ValueError(f"the ignore value must be in 0..255 (label maps are 8-bit), got {value}.")
        lut[value] = IGNORE_INDEX
    return lut


def read_label(path: Path) -> np.ndarray:
    """The stored values of a single-channel label PNG (grey or palette) as an (H, W) integer array."""
    with Image.open(path) as label:
        if label.mode not in ("L", "P", "I", "I;16", "1"):
            raise SegmentationDataError(
                f"label map {path} is {label.mode}, not a single-channel image of class ids; colour-coded labels "
                "must be converted to one id per pixel first.")
        return np.asarray(label)


class SegmentationDataset(Dataset):
    """Image/label-map pairs mapped to training ids (``IGNORE_INDEX`` for ignored pixels).

    ``dataset[i]`` is ``transform(image, target)`` (default: the RGB PIL image and the (H, W)
    uint8 target array); ``load(i)`` skips the transform.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        classes: Sequence[str],
        lut: np.ndarray,
        transform: Optional[JointTransform] = None,
        skip_bad: bool = False,
        name: str = "",
    ) -> None:
        self.classes: List[str] = list(classes)
        self.lut = lut
        self.transform = transform
        self.name = name
        self.skipped: List[str] = []
        self.pairs: List[Pair] = self._check_sizes(list(pairs), skip_bad)
        if not self.pairs:
            raise SegmentationDataError(f"{name or 'the data set'} has no usable image/label pairs"
                                        + (f" ({len(self.skipped)} skipped)." if self.skipped else "."))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _check_sizes(self, pairs: List[Pair], skip_bad: bool) -> List[Pair]:
        """Drop (or refuse) pairs whose label map differs in size from the image; reads file headers only."""
        kept = []
        for image_path, label_path in pairs:
            with Image.open(image_path) as image, Image.open(label_path) as label:
                image_size, label_size = image.size, label.size
            if image_size == label_size:
                kept.append((image_path, label_path))
                continue
            problem = (f"label map {label_path} is {label_size[0]}x{label_size[1]} but its image {image_path} is "
                       f"{image_size[0]}x{image_size[1]}")
            if not skip_bad:
                raise SegmentationDataError(f"{problem}; fix or remove the pair, or pass --skip-bad to skip such pairs.")
            self.skipped.append(problem)
        return kept

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> Tuple[Image.Image, np.ndarray]:
        """The RGB image and its (H, W) uint8 target of training ids, ``IGNORE_INDEX`` where ignored."""
        image_path, label_path = self.pairs[index]
        stored = read_label(label_path)
        flat = stored.astype(np.int64).ravel()
        lut = self.lut
        if flat.size and flat.max() >= len(lut):
            lut = np.concatenate([lut, np.full(int(flat.max()) + 1 - len(lut), INVALID, dtype=lut.dtype)])
        target = lut[flat].reshape(stored.shape)
        if (target == INVALID).any():
            bad = np.unique(stored[target == INVALID])
            known = np.flatnonzero(self.lut != INVALID)
            raise SegmentationDataError(
                f"label map {label_path} holds value(s) {bad[:10].tolist()} that are neither one of the "
                f"{self.num_classes} classes nor an ignore value (accepted stored values: {_ranges(known)}); "
                "check the class list and the ignore value (--classes, --ignore-value).")
        with Image.open(image_path) as image:
            rgb = image.convert("RGB")
        return rgb, target.astype(np.uint8)

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


def _pair_by_stem(images: Dict[str, Path], labels: Dict[str, Path], where: str, skip_bad: bool) -> Tuple[List[Pair], List[str]]:
    """Pairs of files with the same key; unmatched files are an error or, with ``skip_bad``, skipped."""
    missing = [f"image {images[k]} has no label map" for k in sorted(set(images) - set(labels))]
    missing += [f"label map {labels[k]} has no image" for k in sorted(set(labels) - set(images))]
    if missing and not skip_bad:
        more = f" (and {len(missing) - 1} more unmatched files)" if len(missing) > 1 else ""
        raise SegmentationDataError(f"in {where}: {missing[0]}{more}; add the missing files or pass --skip-bad "
                                    "to skip unmatched ones.")
    pairs = [(images[k], labels[k]) for k in sorted(set(images) & set(labels))]
    return pairs, missing


def _files(folder: Path, suffixes: Sequence[str], strip: str = "") -> Dict[str, Path]:
    """Files under ``folder`` (recursively) keyed by their relative path without suffix and ``strip``."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder.")
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in suffixes and path.is_file():
            key = str(path.relative_to(folder).with_suffix(""))
            found[key[: len(key) - len(strip)] if strip and key.endswith(strip) else key] = path
    return found


def _build(pairs: List[Pair], missing: List[str], classes: Sequence[str], lut: np.ndarray,
           transform: Optional[JointTransform], skip_bad: bool, name: str) -> SegmentationDataset:
    dataset = SegmentationDataset(pairs, classes, lut, transform, skip_bad, name)
    dataset.skipped[:0] = missing
    return dataset


def ade20k_dataset(root: PathLike, split: str = "train", transform: Optional[JointTransform] = None,
                   skip_bad: bool = False) -> SegmentationDataset:
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
    return _build(pairs, missing, ADE20K_CLASSES, lut, transform, skip_bad, f"ADE20K {folder}")


def cityscapes_dataset(root: PathLike, split: str = "train", transform: Optional[JointTransform] = None,
                       skip_bad: bool = False) -> SegmentationDataset:
    """Cityscapes fine annotations (``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
    ``gtFine/<split>/<city>/*_gtFine_labelIds.png``): label ids 0..33 become the 19 train ids."""
    base = Path(root)
    images = _files(base / "leftImg8bit" / split, (".png",), strip="_leftImg8bit")
    labels = {k: v for k, v in _files(base / "gtFine" / split, (".png",), strip="_gtFine_labelIds").items()
              if v.name.endswith("_gtFine_labelIds.png")}
    pairs, missing = _pair_by_stem(images, labels, str(base), skip_bad)
    lut = np.full(256, INVALID, dtype=np.int16)
    lut[:CITYSCAPES_NUM_LABEL_IDS] = IGNORE_INDEX
    for label_id, (_, train_id) in CITYSCAPES_TRAIN_IDS.items():
        lut[label_id] = train_id
    classes = [name for name, _ in sorted(CITYSCAPES_TRAIN_IDS.values(), key=lambda item: item[1])]
    return _build(pairs, missing, classes, lut, transform, skip_bad, f"Cityscapes {split}")


def voc_dataset(root: PathLike, split: str = "train", transform: Optional[JointTransform] = None,
                skip_bad: bool = False) -> SegmentationDataset:
    """Pascal VOC 2012 segmentation (``VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}``):
    21 classes (0 = background), 255 marks object boundaries and is ignored."""
    base = Path(root)
    for candidate in (base, base / "VOC2012", base / "VOCdevkit" / "VOC2012"):
        if (candidate / "SegmentationClass").is_dir():
            base = candidate
            break
    list_file = base / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not list_file.is_file():
        raise FileNotFoundError(f"{list_file} does not exist; --data must be VOCdevkit/VOC2012 (or a folder above it) "
                                f"and the split one of its ImageSets/Segmentation/*.txt.")
    names = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
    images = {n: base / "JPEGImages" / f"{n}.jpg" for n in names}
    labels = {n: base / "SegmentationClass" / f"{n}.png" for n in names}
    images = {n: p for n, p in images.items() if p.is_file()}
    labels = {n: p for n, p in labels.items() if p.is_file()}
    pairs, missing = _pair_by_stem(images, labels, str(list_file), skip_bad)
    unlisted = [f"{n} is listed in {list_file.name} but has neither image nor label map"
                for n in names if n not in images and n not in labels]
    if unlisted and not skip_bad:
        raise SegmentationDataError(f"{unlisted[0]}; pass --skip-bad to skip such entries.")
    return _build(pairs, missing + unlisted, VOC_CLASSES, identity_lut(len(VOC_CLASSES), (IGNORE_INDEX,)),
                  transform, skip_bad, f"VOC {split}")


def folder_dataset(root: PathLike, split: str, classes: Sequence[str], ignore_value: Optional[int] = None,
                   transform: Optional[JointTransform] = None, skip_bad: bool = False) -> SegmentationDataset:
    """A generic ``<root>/<split>/images/*`` + ``<root>/<split>/labels/*.png`` pair of folders, matched by
    file name; label maps store class ids ``0..len(classes)-1`` and ``ignore_value`` for void pixels."""
    base = Path(root) / split
    images = _files(base / "images", IMAGE_SUFFIXES)
    labels = _files(base / "labels", (".png",))
    pairs, missing = _pair_by_stem(images, labels, str(base), skip_bad)
    ignore = () if ignore_value is None else (int(ignore_value),)
    return _build(pairs, missing, classes, identity_lut(len(classes), ignore), transform, skip_bad, str(base))


def parse_classes(spec: Union[None, str, Sequence[str]]) -> Optional[List[str]]:
    """Class names from a list, a text file (one name a line) or a comma-separated string."""
    if spec is None or isinstance(spec, (list, tuple)):
        return None if spec is None else [str(name) for name in spec]
    path = Path(spec)
    if path.is_file():
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [name.strip() for name in str(spec).split(",") if name.strip()]


def build_dataset(kind: str, root: PathLike, split: str, transform: Optional[JointTransform] = None,
                  classes: Union[None, str, Sequence[str]] = None, ignore_value: Optional[int] = None,
                  skip_bad: bool = False) -> SegmentationDataset:
    """One of ``DATASET_KINDS`` by name; ``folder`` needs ``classes`` (and usually ``ignore_value``)."""
    if not Path(root).exists():
        raise FileNotFoundError(f"data folder {root} does not exist.")
    if kind == "folder":
        names = parse_classes(classes)
        if not names:
            raise ValueError("a folder data set needs its class list (--classes: names separated by commas, or a "
                             "text file with one name a line), in label-id order.")
        return folder_dataset(root, split, names, ignore_value, transform, skip_bad)
    builders = {"ade20k": ade20k_dataset, "cityscapes": cityscapes_dataset, "voc": voc_dataset}
    if kind not in builders:
        raise ValueError(f"unknown data set kind {kind!r}; choose one of {', '.join(DATASET_KINDS)}.")
    return builders[kind](root, split, transform, skip_bad)


def collate_eval(batch: List[Tuple[Tensor, Tensor]]) -> Tuple[List[Tensor], List[Tensor]]:
    """Keep evaluation images as lists: they differ in size and are predicted one by one."""
    return [item[0] for item in batch], [item[1] for item in batch]

