"""Semantic segmentation data sets: image/label-map pairs checked when built, read upright.

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

The rules from stored values or colours to training ids are in ``label_maps``, the published layouts
(ADE20K, Cityscapes, VOC, a folder pair) and ``build_dataset`` in ``layouts``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ...errors import SegmentationDataError, UsageError
from ..checks import Problem, describe_problems
from ..io import image_size, open_upright, read_image
from .label_maps import INVALID, LabelPalette, read_label

PathLike = Union[str, Path]
Pair = Tuple[Path, Path]
JointTransform = Callable[[Image.Image, np.ndarray], Tuple[Tensor, Tensor]]
BUILD_CHECK_THREADS = 8


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
        unmatched: Sequence[str] = (),
    ) -> None:
        if lut is None and palette is None:
            raise UsageError(
                "a segmentation data set needs a lookup table (index label maps) or a palette "
                "(colour-coded label maps)."
            )
        self.classes: List[str] = list(classes)
        self.lut = lut
        self.palette = palette
        self.transform = transform
        self.name = name
        self.channels = channels
        self.skipped: List[str] = list(unmatched)
        self.pairs: List[Pair] = self._check(list(pairs), skip_bad)
        if not self.pairs:
            raise SegmentationDataError(
                f"{name or 'the data set'} has no usable image/label pairs"
                + (f": {describe_problems(self.skipped)}." if self.skipped else ".")
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _problem(self, pair: Pair) -> Optional[Problem]:
        """What is wrong with one pair (``None`` if nothing): image header unreadable, label map unreadable or
        holding values/colours outside the class list, or sizes that differ. Decodes the label map only."""
        image_path, label_path = pair
        try:
            width, height = image_size(image_path)
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            return Problem("unreadable images", f"image {image_path} cannot be read ({error})")
        try:
            target = self.target(label_path)
        except SegmentationDataError as error:
            if self.palette is not None:
                return Problem("label maps with colours outside the palette", str(error))
            return Problem("label maps with values that are no class nor the ignore value", str(error))
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            return Problem("unreadable label maps", f"label map {label_path} cannot be read ({error})")
        if target.shape != (height, width):
            return Problem(
                "label maps of another size than their image",
                f"label map {label_path} is {target.shape[1]}x{target.shape[0]} but its image {image_path} is "
                f"{width}x{height}; fix or remove the pair",
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

    def pixel_counts(self) -> np.ndarray:
        """(images, classes) int64: the pixels of each class in each label map (ignored pixels not counted),
        at the stored resolution; decodes every label map (on up to ``BUILD_CHECK_THREADS`` threads)."""

        def count(pair: Pair) -> np.ndarray:
            return np.bincount(self.target(pair[1]).ravel(), minlength=256)[: self.num_classes]

        workers = max(1, min(BUILD_CHECK_THREADS, os.cpu_count() or 1, len(self.pairs)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return np.stack(list(pool.map(count, self.pairs))).astype(np.int64)

    def load(self, index: int) -> Tuple[Image.Image, np.ndarray]:
        """The image (``channels`` channels, upright) and its (H, W) uint8 target of training ids,
        ``IGNORE_INDEX`` where ignored.

        Raises:
            SegmentationDataError: the image cannot be decoded (its header was read when the set was built) or no
                longer fits its label map, naming the file.
        """
        image_path, label_path = self.pairs[index]
        target = self.target(label_path)
        try:
            image = read_image(image_path, self.channels)
        except (OSError, ValueError, Image.DecompressionBombError) as error:  # the header read, the pixels do not
            raise SegmentationDataError(
                f"image {image_path} cannot be read ({error}); replace or remove it."
            ) from error
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


def collate_eval(batch: List[Tuple[Tensor, Tensor]]) -> Tuple[List[Tensor], List[Tensor]]:
    """Keep evaluation images as lists: they differ in size and are predicted one by one."""
    return [item[0] for item in batch], [item[1] for item in batch]
