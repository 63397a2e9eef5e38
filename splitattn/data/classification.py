"""Data sets for classification: ImageFolder trees, CSV lists of ``path,label``, and scikit-learn's digits.

Every data set yields ``(image_tensor, label, unreadable_paths)``: a corrupt or unreadable
file costs one sample and a line in the log, never the run. Images are read by
``splitattn.data.io.read_image`` with the model's channel count (``channels``: 1, 3 or 4);
hidden files and folders (``.DS_Store``, ``._x.jpg``, ``.ipynb_checkpoints/``) are never
samples, and a training set must have at least two classes.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..errors import DataError, UsageError
from .checks import Problem, describe_problems
from .io import CHANNEL_MODES, IMAGE_EXTENSIONS, is_hidden, read_image

# Split names tried, in order, for training and for evaluation.
TRAIN_SPLITS = ("train",)
EVAL_SPLITS = ("val", "test")

# Column names recognised in a CSV header (lower case) when no column is named by the caller.
PATH_COLUMNS = ("path", "filename", "file_name", "file", "filepath", "file_path", "image", "image_path", "img", "fname")
LABEL_COLUMNS = ("label", "class", "class_name", "category", "target", "y")

Transform = Callable[[Image.Image], torch.Tensor]


class ImageListDataset(Dataset):
    """Images given as a list of ``(path, class index)``; yields ``(image, label, bad paths)``.

    An unreadable file is never an exception. With ``replace_bad`` (training) the next
    readable image takes its place, so batch sizes stay fixed (what BatchNorm and
    DistributedDataParallel need); without it (evaluation) the image is ``None``,
    ``collate_skip_bad`` hands its path on and the evaluation counts it as a miss or names it as
    an error (``tasks.classification.engine.evaluate``). Either way the bad path is reported.
    Images are read with ``channels`` channels (1, 3 or 4; ``read_image``).
    """

    def __init__(
        self,
        samples: Sequence[Tuple[str, int]],
        classes: Sequence[str],
        transform: Optional[Transform] = None,
        replace_bad: bool = False,
        channels: int = 3,
    ):
        _check_channels(channels)
        self.samples = list(samples)
        self.classes = list(classes)
        self.transform = transform
        self.replace_bad = replace_bad
        self.channels = channels

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> List[int]:
        """The class index of every sample, in order (as ``ArrayImageDataset.labels``)."""
        return [label for _, label in self.samples]

    def _load(self, index: int) -> Union[Image.Image, Problem]:
        """The image of sample ``index``, or why it cannot be read."""
        path = self.samples[index][0]
        try:
            return read_image(path, self.channels)
        except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError) as error:
            return Problem(f"unreadable images ({type(error).__name__})", f"{path}: {error}")

    def __getitem__(self, index: int) -> Tuple[Optional[torch.Tensor], int, Tuple[str, ...]]:
        bad: List[str] = []
        problems: List[Problem] = []
        for attempt in range(len(self.samples)):
            position = (index + attempt) % len(self.samples)
            image = self._load(position)
            if not isinstance(image, Problem):
                label = self.samples[position][1]
                return (self.transform(image) if self.transform else image), label, tuple(bad)
            bad.append(self.samples[position][0])
            problems.append(image)
            if not self.replace_bad:
                return None, self.samples[index][1], tuple(bad)
        raise DataError(
            f"none of the {len(self.samples)} images of this data set can be read: {describe_problems(problems)}."
        )

    def unreadable(self, paths: Sequence[str]) -> str:
        """Why the images at ``paths`` cannot be read, counted by kind (``checks.describe_problems``): each of
        them is read again for its error (the loader's workers report paths only)."""
        index = {path: i for i, (path, _) in enumerate(self.samples)}
        problems = [self._load(index[p]) for p in paths if p in index]
        return describe_problems([p for p in problems if isinstance(p, Problem)])


class ArrayImageDataset(Dataset):
    """In-memory greyscale images (uint8, N x H x W) with labels, as PIL images with ``channels`` channels
    (1: ``L``, 3: ``RGB``, 4: ``RGBA``) through ``transform``."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: Sequence[int],
        classes: Sequence[str],
        transform: Optional[Transform] = None,
        channels: int = 3,
    ):
        _check_channels(channels)
        self.images = images
        self.labels = [int(label) for label in labels]
        self.classes = list(classes)
        self.transform = transform
        self.channels = channels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int, Tuple[str, ...]]:
        image = Image.fromarray(self.images[index].numpy()).convert(CHANNEL_MODES[self.channels])
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


def _check_channels(channels: int) -> None:
    if channels not in CHANNEL_MODES:
        raise UsageError(f"images can be read with 1, 3 or 4 channels (the model's in_chans), not {channels}.")


def _scan_folder(root: Path, classes: Optional[Sequence[str]]) -> Tuple[List[Tuple[str, int]], List[str]]:
    """``(samples, classes)`` of an ImageFolder tree ``root/<class>/<image>``; hidden files and folders are skipped."""
    found = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not is_hidden(entry.name))
    if not found:
        raise DataError(
            f"data folder {str(root)!r} has no class sub-folders; expected the ImageFolder layout "
            f"{root}/<class name>/<image>.jpg."
        )
    classes = list(classes) if classes is not None else found
    index = {name: i for i, name in enumerate(classes)}
    samples: List[Tuple[str, int]] = []
    for name in found:
        if name not in index:
            raise DataError(
                f"class folder {str(root / name)!r} is not a class of the training set ({len(classes)} classes); "
                "evaluation folders must use the training class names."
            )
        files = sorted(
            str(path)
            for path in (root / name).rglob("*")
            if path.suffix.lower() in IMAGE_EXTENSIONS and not is_hidden(path, root) and path.is_file()
        )
        if not files:
            raise DataError(
                f"class folder {str(root / name)!r} has no images (looked for {', '.join(IMAGE_EXTENSIONS)}); "
                "add images or remove the folder."
            )
        samples.extend((path, index[name]) for path in files)
    return samples, classes


def _column(header: List[str], name: str, path: Path) -> int:
    names = [cell.strip().lower() for cell in header]
    if name.lower() not in names:
        raise DataError(f"CSV list {str(path)!r} has no column {name!r}; its header is {','.join(header)}.")
    return names.index(name.lower())


def _csv_columns(
    rows: List[List[str]],
    path: Path,
    classes: Optional[Sequence[str]],
    path_column: Optional[str],
    label_column: Optional[str],
) -> Tuple[bool, int, int]:
    """``(first row is a header, path column, label column)`` of a CSV list.

    Columns named by the caller are looked up in the first row, which is then the header. Otherwise the first
    row is a header when it names a path column and a label column (``PATH_COLUMNS``, ``LABEL_COLUMNS``, any
    order), or when its first cell is not an existing file while its second is no class: not one of
    ``classes``, or (classes not given) a label that no other row has. A header of other names keeps the
    columns in place (path first, label second).
    """
    first = [cell.strip() for cell in rows[0]]
    if path_column is not None or label_column is not None:
        return True, _column(first, path_column or "path", path), _column(first, label_column or "label", path)
    names = [cell.lower() for cell in first]
    path_at = next((i for i, cell in enumerate(names) if cell in PATH_COLUMNS), None)
    label_at = next((i for i, cell in enumerate(names) if cell in LABEL_COLUMNS), None)
    if path_at is not None and label_at is not None and path_at != label_at:
        return True, path_at, label_at
    if len(first) < 2:
        return False, 0, 1
    known = set(classes) if classes is not None else {row[1].strip() for row in rows[1:] if len(row) > 1}
    names_a_file = (path.parent / first[0]).is_file()
    return (not names_a_file and first[1] not in known), 0, 1


def _read_csv(
    path: Path, classes: Optional[Sequence[str]], path_column: Optional[str] = None, label_column: Optional[str] = None
) -> Tuple[List[Tuple[str, int]], List[str]]:
    """``(samples, classes)`` of a CSV list of image paths and labels (paths relative to the CSV).

    The header is optional and recognised by its content (``_csv_columns``); ``path_column`` and
    ``label_column`` name the columns of a header such as ``filename,class``.
    """
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle) if row and not row[0].startswith("#")]
    if not rows:
        raise DataError(f"CSV list {str(path)!r} has no rows; expected lines of path,label.")
    has_header, path_at, label_at = _csv_columns(rows, path, classes, path_column, label_column)
    rows = rows[1:] if has_header else rows
    if not rows:
        raise DataError(f"CSV list {str(path)!r} has a header but no rows.")
    width = max(path_at, label_at) + 1
    bad_rows = [i for i, row in enumerate(rows, start=1 + has_header) if len(row) < width]
    if bad_rows:
        raise DataError(
            f"CSV list {str(path)!r}: row(s) {bad_rows[:5]} do not have the path and label columns "
            f"(columns {path_at + 1} and {label_at + 1})."
        )
    labels = [row[label_at].strip() for row in rows]
    if classes is None:
        unique = set(labels)
        numeric = all(label.lstrip("-").isdigit() for label in unique)
        classes = sorted(unique, key=int) if numeric else sorted(unique)
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise DataError(f"CSV list {str(path)!r} has labels not in the training set: {unknown[:5]}.")
    samples = [(str((path.parent / row[path_at].strip()).resolve()), index[label]) for row, label in zip(rows, labels)]
    kept = [sample for sample in samples if not is_hidden(Path(sample[0]).name)]
    if len(kept) < len(samples):
        warnings.warn(
            f"CSV list {path}: {len(samples) - len(kept)} hidden file(s) (names starting with '.') left out.",
            stacklevel=3,
        )
    return kept, list(classes)


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
    raise FileNotFoundError(
        f"data folder {str(root)!r} has no {wanted}; found: {sorted(p.name for p in root.iterdir())}."
    )


def load_split(
    location: Union[str, Path],
    transform: Optional[Transform] = None,
    classes: Optional[Sequence[str]] = None,
    replace_bad: bool = False,
    channels: int = 3,
    path_column: Optional[str] = None,
    label_column: Optional[str] = None,
) -> ImageListDataset:
    """An ``ImageListDataset`` from an ImageFolder tree or a CSV list; ``classes`` fixes the label order.

    ``channels`` (1, 3 or 4) is the model's ``in_chans``; ``path_column``/``label_column`` name the columns of
    a CSV list whose header is not ``path,label``. Without ``classes`` (a training set) the split must have at
    least two classes. Raises ``DataError`` (naming the file and the fix) for a layout it cannot read.
    """
    location = Path(location)
    if location.is_dir():
        samples, found = _scan_folder(location, classes)
    elif location.suffix.lower() == ".csv":
        samples, found = _read_csv(location, classes, path_column, label_column)
    else:
        raise DataError(f"{str(location)!r} is neither an image folder nor a .csv list of path,label.")
    if classes is None and len(found) < 2:
        raise DataError(
            f"{str(location)!r} has {len(found)} class ({', '.join(found)}); a classifier needs at least 2 "
            "(one class-folder per class, or two or more labels in the CSV list)."
        )
    return ImageListDataset(samples, found, transform, replace_bad, channels)


def digits_datasets(
    train_transform: Optional[Transform],
    eval_transform: Optional[Transform],
    test_fraction: float = 0.2,
    channels: int = 3,
) -> Tuple[ArrayImageDataset, ArrayImageDataset]:
    """scikit-learn's 1797 handwritten digits (8x8, shipped with the package), split train/test per class.

    The transforms resize the 8x8 images up to the training size (the models need >= 32 px); the images
    have ``channels`` channels (1, 3 or 4: the grey level repeated, opaque alpha).
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
    train = ArrayImageDataset(images[~test_mask], labels[~test_mask].tolist(), classes, train_transform, channels)
    test = ArrayImageDataset(images[test_mask], labels[test_mask].tolist(), classes, eval_transform, channels)
    return train, test
