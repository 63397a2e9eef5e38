"""Label maps: how a segmentation label file's stored values or colours become training ids.

Training ids are ``0..K-1`` for the K classes and ``IGNORE_INDEX`` (255) for pixels that count nowhere.
Index label maps (grey or palette PNGs storing one class id a pixel) are mapped by a lookup table
(``identity_lut`` for files that store the ids themselves); colour-coded label maps (CamVid's original
labels, Cityscapes' ``_color.png``) by a palette file, a CSV of ``name,r,g,b`` (``read_palette``). A
stored value or colour the rule does not know is an error naming the file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from ...errors import SegmentationDataError, UsageError
from ..io import open_upright

IGNORE_INDEX = 255
INVALID = -1  # lookup-table entry of a stored value that no class or ignore value accounts for
PathLike = Union[str, Path]
INDEX_MODES = ("L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N", "1")
COLOUR_MODES = ("RGB", "RGBA", "P")
IGNORE_NAME = "ignore"  # palette rows of this name map their colour (or, with r,g,b = *, every other) to IGNORE_INDEX


def identity_lut(num_classes: int, ignore_values: Sequence[int] = ()) -> np.ndarray:
    """Lookup table for label maps that store class ids directly: ``v -> v`` for ``v < num_classes``,
    each of ``ignore_values`` -> ``IGNORE_INDEX``, anything else invalid."""
    if not 0 < num_classes <= IGNORE_INDEX:
        raise UsageError(
            f"a class list must have 1..{IGNORE_INDEX} classes ({IGNORE_INDEX} marks ignored pixels), "
            f"got {num_classes}."
        )
    lut = np.full(256, INVALID, dtype=np.int16)
    lut[:num_classes] = np.arange(num_classes)
    for value in ignore_values:
        if 0 <= value < num_classes:
            raise UsageError(
                f"the ignore value {value} is also a class id (classes are 0..{num_classes - 1}); "
                "pick a value outside the class list."
            )
        if not 0 <= value <= 255:
            raise UsageError(f"the ignore value must be in 0..255 (label maps are 8-bit), got {value}.")
        lut[value] = IGNORE_INDEX
    return lut


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
