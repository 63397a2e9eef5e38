"""Command-line helpers shared by the ``predict``/``evaluate`` commands of every task (task-agnostic):
the device to run on and the image files named on the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
from PIL import Image

from ..data.io import is_hidden, read_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def pick_device(name: Optional[str]) -> torch.device:
    """``--device``: ``cpu``, ``cuda`` (an error without a GPU) or ``None`` (a GPU when one is visible)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no GPU is visible; use --device cpu.")
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


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
