"""Data sets for classification: ImageFolder trees, CSV lists of ``path,label``, and scikit-learn's digits.

Every data set yields ``(image_tensor, label, unreadable_paths)``: a corrupt or unreadable
file costs one sample and a line in the log, never the run.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# Split names tried, in order, for training and for evaluation.
TRAIN_SPLITS = ("train",)
EVAL_SPLITS = ("val", "test")

Transform = Callable[[Image.Image], torch.Tensor]


def open_rgb(path: Union[str, Path]) -> Image.Image:
    """Decode an image fully and convert it to RGB (greyscale, palette, CMYK, alpha ...)."""
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB")


class ImageListDataset(Dataset):
    """Images given as a list of ``(path, class index)``; yields ``(image, label, bad paths)``.

    An unreadable file is never an exception. With ``replace_bad`` (training) the next
    readable image takes its place, so batch sizes stay fixed (what BatchNorm and
    DistributedDataParallel need); without it (evaluation) the image is ``None`` and
    ``collate_skip_bad`` drops it. Either way the bad path is reported for the log.
    """

    def __init__(self, samples: Sequence[Tuple[str, int]], classes: Sequence[str], transform: Optional[Transform] = None,
                 replace_bad: bool = False):
        self.samples = list(samples)
        self.classes = list(classes)
        self.transform = transform
        self.replace_bad = replace_bad

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> Optional[Image.Image]:
        try:
            return open_rgb(self.samples[index][0])
        except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError):
            return None

    def __getitem__(self, index: int) -> Tuple[Optional[torch.Tensor], int, Tuple[str, ...]]:
        bad: List[str] = []
        for attempt in range(len(self.samples)):
            position = (index + attempt) % len(self.samples)
            image = self._load(position)
            if image is not None:
                label = self.samples[position][1]
                return (self.transform(image) if self.transform else image), label, tuple(bad)
            bad.append(self.samples[position][0])
            if not self.replace_bad:
                return None, self.samples[index][1], tuple(bad)
        raise RuntimeError(f"none of the {len(self.samples)} images of this data set can be read (e.g. {bad[0]!r}).")


class ArrayImageDataset(Dataset):
    """In-memory greyscale images (uint8, N x H x W) with labels, as RGB PIL images through ``transform``."""

    def __init__(self, images: torch.Tensor, labels: Sequence[int], classes: Sequence[str], transform: Optional[Transform] = None):
        self.images = images
        self.labels = [int(label) for label in labels]
        self.classes = list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int, Tuple[str, ...]]:
        image = Image.fromarray(self.images[index].numpy()).convert("RGB")
        return (self.transform(image) if self.transform else image), self.labels[index], ()


def collate_skip_bad(batch: List) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """Stack the readable samples; return ``(images, labels, paths of unreadable images)``."""
    bad = [path for item in batch for path in item[2]]
    good = [item for item in batch if item[0] is not None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), bad
    images = torch.stack([item[0] for item in good])
    labels = torch.tensor([item[1] for item in good], dtype=torch.long)
    return images, labels, bad


def _scan_folder(root: Path, classes: Optional[Sequence[str]]) -> Tuple[List[Tuple[str, int]], List[str]]:
    """``(samples, classes)`` of an ImageFolder tree ``root/<class>/<image>``."""
    found = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not found:
        raise ValueError(
            f"data folder {str(root)!r} has no class sub-folders; expected the ImageFolder layout "
            f"{root}/<class name>/<image>.jpg."
        )
    classes = list(classes) if classes is not None else found
    index = {name: i for i, name in enumerate(classes)}
    samples: List[Tuple[str, int]] = []
    for name in found:
        if name not in index:
            raise ValueError(
                f"class folder {str(root / name)!r} is not a class of the training set ({len(classes)} classes); "
                "evaluation folders must use the training class names."
            )
        files = sorted(
            str(path) for path in (root / name).rglob("*")
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
        )
        if not files:
            raise ValueError(
                f"class folder {str(root / name)!r} has no images (looked for {', '.join(IMAGE_EXTENSIONS)}); "
                "add images or remove the folder."
            )
        samples.extend((path, index[name]) for path in files)
    return samples, classes


def _read_csv(path: Path, classes: Optional[Sequence[str]]) -> Tuple[List[Tuple[str, int]], List[str]]:
    """``(samples, classes)`` of a CSV of ``path,label`` rows (header optional; paths relative to the CSV)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row and not row[0].startswith("#")]
    if rows and [cell.strip().lower() for cell in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    if not rows:
        raise ValueError(f"CSV list {str(path)!r} has no rows; expected lines of path,label.")
    bad_rows = [i for i, row in enumerate(rows, start=1) if len(row) < 2]
    if bad_rows:
        raise ValueError(f"CSV list {str(path)!r}: row(s) {bad_rows[:5]} do not have the two columns path,label.")
    labels = [row[1].strip() for row in rows]
    if classes is None:
        unique = set(labels)
        numeric = all(label.lstrip("-").isdigit() for label in unique)
        classes = sorted(unique, key=int) if numeric else sorted(unique)
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ValueError(f"CSV list {str(path)!r} has labels not in the training set: {unknown[:5]}.")
    samples = [(str((path.parent / row[0].strip()).resolve()), index[label]) for row, label in zip(rows, labels)]
    return samples, list(classes)


def find_split(root: Union[str, Path], names: Sequence[str]) -> Path:
    """The first ``root/<name>`` folder or ``root/<name>.csv`` file that exists."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"data folder {str(root)!r} does not exist; --data must be a folder holding train/ and val/ "
            "(or test/) in the ImageFolder layout, or train.csv and val.csv."
        )
    for name in names:
        for candidate in (root / name, root / f"{name}.csv"):
            if candidate.exists():
                return candidate
    wanted = " or ".join(f"{n}/ or {n}.csv" for n in names)
    raise FileNotFoundError(f"data folder {str(root)!r} has no {wanted}; found: {sorted(p.name for p in root.iterdir())}.")


def load_split(
    location: Union[str, Path], transform: Optional[Transform] = None, classes: Optional[Sequence[str]] = None,
    replace_bad: bool = False,
) -> ImageListDataset:
    """An ``ImageListDataset`` from an ImageFolder tree or a CSV list; ``classes`` fixes the label order."""
    location = Path(location)
    if location.is_dir():
        samples, classes = _scan_folder(location, classes)
    elif location.suffix.lower() == ".csv":
        samples, classes = _read_csv(location, classes)
    else:
        raise ValueError(f"{str(location)!r} is neither an image folder nor a .csv list of path,label.")
    return ImageListDataset(samples, classes, transform, replace_bad)


def digits_datasets(
    train_transform: Optional[Transform], eval_transform: Optional[Transform], test_fraction: float = 0.2
) -> Tuple[ArrayImageDataset, ArrayImageDataset]:
    """scikit-learn's 1797 handwritten digits (8x8, shipped with the package), split train/test per class.

    The transforms resize the 8x8 images up to the training size (the models need >= 32 px).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy((digits.images * (255.0 / 16.0)).round().astype("uint8"))
    labels = torch.from_numpy(digits.target)
    generator = torch.Generator().manual_seed(0)
    test_mask = torch.zeros(len(labels), dtype=torch.bool)
    for label in labels.unique():
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        test_mask[members[: int(round(len(members) * test_fraction))]] = True
    classes = [str(i) for i in range(10)]
    train = ArrayImageDataset(images[~test_mask], labels[~test_mask].tolist(), classes, train_transform)
    test = ArrayImageDataset(images[test_mask], labels[test_mask].tolist(), classes, eval_transform)
    return train, test
