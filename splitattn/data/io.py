"""Reading images and listing sample files: one implementation for every task.

Every loader (classification, segmentation, detection, ``predict``) reads pixels through
``read_image`` and filters file listings through ``is_hidden``, so an image is the same
array wherever it is used:

- the EXIF orientation tag is applied (phone photos are stored rotated; annotations are
  drawn on the upright picture), as ``PIL.ImageOps.exif_transpose`` does;
- high-bit-depth greyscale (``I;16*``, ``I``, ``F``) is scaled by its type's full range
  to 8 bits, as ``torchvision.transforms.v2.functional.to_dtype(..., scale=True)`` does
  (``uint16 -> uint8`` is ``v >> 8``; ``int32 -> uint8`` is ``v >> 23``; float is taken as
  0..1), never clipped at 255 by ``convert`` and never stretched per image;
- the result has the model's channel count: 1 (``L``), 3 (``RGB``) or 4 (``RGBA``).

Label maps are read with ``open_upright``: the same orientation, but their stored values are
never converted (a mode conversion would turn class ids into grey levels or colours).
``image_size`` gives the upright size from the file header alone, so data sets can check
image/annotation sizes when they are built without decoding any pixels.

The ``predict``/``evaluate`` commands of every task read the images named on the command line
through ``image_files`` (folders expanded) and ``ImageReader`` (an unreadable file is reported and
skipped).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import ExifTags, Image, ImageOps

from ..errors import UsageError
from ..models.eval_config import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "CHANNEL_MODES",
    "IMAGE_EXTENSIONS",
    "IMAGE_SUFFIXES",
    "ImageReader",
    "channel_stats",
    "image_files",
    "image_size",
    "is_hidden",
    "normalisation",
    "open_upright",
    "read_image",
    "to_8bit",
    "with_channels",
]

CHANNEL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
# what counts as an image file when a folder is listed: data sets (classification, detection) ...
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# ... and the images named on the command line and segmentation folders
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# EXIF orientations that turn the stored picture by 90 degrees (width and height swap when made upright)
_QUARTER_TURNS = (5, 6, 7, 8)
# bits to drop when scaling each high-bit-depth mode to 8 bits (to_dtype(..., scale=True))
_SHIFTS = {"I;16": 8, "I;16L": 8, "I;16B": 8, "I;16N": 8, "I": 23}


def is_hidden(path: Union[str, Path], root: Union[str, Path, None] = None) -> bool:
    """True when ``path`` (or a folder between ``root`` and it) starts with a dot: ``.DS_Store``,
    macOS's ``._x.jpg`` resource forks, ``.ipynb_checkpoints/``, ``.git/``. Such files are never samples."""
    parts = Path(path).relative_to(root).parts if root is not None else Path(path).parts
    return any(part.startswith(".") and part not in (".", "..") for part in parts)


def to_8bit(image: Image.Image) -> Image.Image:
    """``image`` with high-bit-depth greyscale scaled to mode ``L`` by the type's full range; other modes as they are.

    ``I;16*`` (16-bit PNG/TIFF) keeps the top 8 of 16 bits, ``I`` (32-bit signed) the top 8 of 31 (negative
    values become 0), ``F`` (32-bit float) is read as 0..1 and clipped there. Raises nothing for other modes.
    """
    if image.mode in _SHIFTS:
        values = np.asarray(image).astype(np.int64)
        return Image.fromarray((np.clip(values, 0, None) >> _SHIFTS[image.mode]).clip(0, 255).astype(np.uint8), "L")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float32)
        # to_dtype's float -> uint8 rule: multiply by 256 - 1e-3 and truncate (evenly sized bins, 1.0 -> 255)
        return Image.fromarray((np.clip(values, 0.0, 1.0) * (256 - 1e-3)).astype(np.uint8), "L")
    return image


def channel_stats(
    channels: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Normalisation ``(mean, std)`` with one value per channel for images read with ``channels`` channels.

    3 channels: ``mean``/``std`` as given (ImageNet's RGB statistics by default). 1 channel (``L``): the
    average of the three values. 4 channels (``RGBA``): the three RGB values, then that average for the fourth
    channel. Raises ``ValueError`` for other channel counts.
    """
    if channels not in CHANNEL_MODES:
        raise UsageError(f"images can be read with 1, 3 or 4 channels, not {channels}.")
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    grey = (sum(mean) / len(mean),), (sum(std) / len(std),)
    if channels == 1:
        return grey
    return (mean, std) if channels == 3 else (mean + grey[0], std + grey[1])


def image_size(path: Union[str, Path]) -> Tuple[int, int]:
    """``(width, height)`` of the image at ``path`` once made upright, read from the file header only.

    The EXIF orientation is taken from the metadata PIL reads with the header (JPEG/TIFF/WebP EXIF, a PNG
    ``eXIf`` chunk before the pixel data); no pixel is decoded. Raises ``OSError`` for unreadable files.
    """
    with Image.open(path) as opened:
        width, height = opened.size
        if opened.format == "TIFF":  # PIL turns a TIFF upright itself when reading it: its size is upright
            return width, height
        # PNG's getexif decodes the whole file to find an eXIf chunk after the pixels; the base class's reads
        # only what the header gave. JPEG and WebP read their EXIF with the header.
        exif = Image.Image.getexif(opened) if opened.format == "PNG" else opened.getexif()
        orientation = exif.get(ExifTags.Base.Orientation, 1)
    return (height, width) if orientation in _QUARTER_TURNS else (width, height)


def normalisation(
    channels: int, mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None
) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """``(mean, std)`` for images of ``channels`` channels: the given values, else ``channel_stats(channels)``.
    Raises ``ValueError`` unless there is one mean and one std per channel."""
    default_mean, default_std = channel_stats(channels)
    mean, std = tuple(default_mean if mean is None else mean), tuple(default_std if std is None else std)
    if len(mean) != channels or len(std) != channels:
        raise UsageError(
            f"normalisation needs one mean and one std per channel ({channels}), got mean {mean} and std {std}."
        )
    return mean, std


def open_upright(path: Union[str, Path]) -> Image.Image:
    """Decode the image at ``path`` and apply its EXIF orientation; its mode and values are kept as stored.

    For label maps and other files whose values are not intensities. Raises ``OSError`` /
    ``PIL.UnidentifiedImageError`` for unreadable files.
    """
    with Image.open(path) as opened:
        opened.load()
        return ImageOps.exif_transpose(opened)


def read_image(path: Union[str, Path], channels: int = 3) -> Image.Image:
    """Decode the image at ``path`` upright, at 8 bits, with ``channels`` channels (1, 3 or 4).

    Greyscale, palette, CMYK, alpha and 16/32-bit images are all accepted; greyscale becomes RGB by
    repetition, RGB becomes ``L`` by ITU-R 601 luma when ``channels=1``. Raises ``OSError`` /
    ``PIL.UnidentifiedImageError`` for unreadable files and ``ValueError`` for an unsupported ``channels``.
    """
    return with_channels(open_upright(path), channels)


def with_channels(image: Image.Image, channels: int = 3) -> Image.Image:
    """``image`` at 8 bits (``to_8bit``) with ``channels`` channels (1, 3 or 4), converted as ``read_image``
    converts what it decodes. Raises ``ValueError`` for an unsupported ``channels``."""
    if channels not in CHANNEL_MODES:
        raise UsageError(f"images can be read with 1, 3 or 4 channels, not {channels}.")
    image = to_8bit(image)
    mode = CHANNEL_MODES[channels]
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # a palette image's transparency cannot go straight to L/RGB cleanly
    return image if image.mode == mode else image.convert(mode)


def image_files(inputs: Sequence[str], suffixes: Sequence[str] = IMAGE_SUFFIXES) -> List[Path]:
    """Image files named on the command line: files as given, folders expanded to their images (sorted;
    hidden files such as ``.DS_Store`` or ``._x.jpg`` left out)."""
    files: List[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(
                p for p in path.iterdir() if p.suffix.lower() in suffixes and not is_hidden(p.name) and p.is_file()
            )
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{item} is neither an image file nor a folder.")
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(suffixes)}) in {', '.join(inputs)}.")
    return files


class ImageReader:
    """``(path, PIL image)`` for each image named on the command line (folders expanded by ``image_files``),
    read by ``data.io.read_image`` with ``channels`` channels. An unreadable file is named on stderr and
    skipped; ``exit_code`` is then 1, so a script notices."""

    def __init__(self, inputs: Sequence[str], channels: int = 3) -> None:
        self.paths, self.channels, self.failed = image_files(inputs), channels, 0

    def __iter__(self) -> Iterator[Tuple[Path, Image.Image]]:
        for path in self.paths:
            try:
                yield path, read_image(path, channels=self.channels)
            except (OSError, ValueError, SyntaxError) as error:
                self.failed += 1
                print(f"{path}: cannot read image ({type(error).__name__}: {error}); skipped", file=sys.stderr)

    @property
    def exit_code(self) -> int:
        """0 when every image was read, else 1."""
        return 1 if self.failed else 0
