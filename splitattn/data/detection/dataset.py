"""``DetectionDataset``: cleaned records served as torchvision detection samples, and their collation."""

from __future__ import annotations

import warnings
from functools import cached_property
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from ...errors import DetectionDataError
from ..io import read_image
from .records import (
    BACKGROUND,
    STATS_KEYS,
    STATS_TEXT,
    DetectionTransform,
    ImageRecord,
    ProblemCounts,
    Target,
    box_mask,
    coco_from_records,
    segmentation_to_mask,
)


class DetectionDataset(Dataset):
    """Images with cleaned box annotations; see ``splitattn.data.detection`` for the target format.

    ``classes[0]`` is ``"__background__"``, ``classes[k]`` the name of contiguous label k;
    ``contiguous_to_coco`` / ``coco_to_contiguous`` map labels to the category ids of ``coco``, the
    evaluation ground truth built from ``records`` (all of them, before a training set filters them).
    ``classes_from_files`` is True when the class list was read from the annotation files (``summary``
    then lists it). Raises ``DetectionDataError`` when no image is usable. (The detection task scores an
    evaluation set's ground truth on itself when it builds one: ``tasks.detection.evaluation``.)
    """

    def __init__(
        self,
        records: List[ImageRecord],
        classes: Sequence[str],
        contiguous_to_coco: Dict[int, int],
        stats: ProblemCounts,
        transforms: Optional[DetectionTransform],
        train: bool,
        skip_bad: bool,
        with_masks: bool,
        name: str,
        classes_from_files: bool = False,
    ) -> None:
        self.classes: List[str] = [BACKGROUND, *classes]
        self.contiguous_to_coco = dict(contiguous_to_coco)
        self.coco_to_contiguous = {coco_id: label for label, coco_id in self.contiguous_to_coco.items()}
        self.transforms = transforms
        self.train = train
        self.skip_bad = skip_bad
        self.with_masks = with_masks
        self.name = name
        self.stats = stats
        self.classes_from_files = classes_from_files
        self._all_records = records  # the ground truth's images: also those a training set leaves out
        if train:
            usable = [r for r in records if (r.iscrowd == 0).any()]
            left_out = [r for r in records if not (r.iscrowd == 0).any()]
            if left_out:
                stats.note(
                    "images_filtered_for_training",
                    f"{left_out[0].path.name} has no object to train on (none, or only crowd/difficult ones)",
                    len(left_out),
                )
            records = usable
        self.records = records
        stats["images_used"] = len(records)
        if not records:
            firsts = [f"{key}: {stats.examples[key]}" for key in STATS_KEYS if key in stats.examples]
            raise DetectionDataError(
                f"{name} has no usable images; {self.summary()}"
                + (" First cases: " + "; ".join(firsts) + "." if firsts else "")
            )

    @cached_property
    def coco(self) -> COCO:
        """The evaluation ground truth, built from the cleaned records on first use (when an evaluation set is
        built; a training set, which is never scored, does not pay for it)."""
        return coco_from_records(
            self._all_records,
            {self.contiguous_to_coco[label]: self.classes[label] for label in range(1, len(self.classes))},
            self.contiguous_to_coco,
            any(r.segmentations is not None for r in self._all_records),
        )

    @property
    def num_classes(self) -> int:
        """K + 1: the object classes and the background."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.records)

    def summary(self) -> str:
        """One line for the log: images used and every non-zero problem count (and the class list when it
        was read from the files)."""
        problems = [f"{self.stats[key]} {text}" for key, text in STATS_TEXT.items() if self.stats.get(key)]
        return (
            f"{self.name}: {self.stats['images_used']} of {self.stats['images']} images, "
            f"{self.stats['annotations']} annotations, {self.num_classes - 1} classes"
            + (f" (read from the files, sorted: {', '.join(self.classes[1:])})" if self.classes_from_files else "")
            + ("; " + ", ".join(problems) if problems else "")
            + "."
        )

    def target(self, index: int) -> Target:
        """The target of image ``index`` without reading the image (crowd regions left out when training)."""
        record = self.records[index]
        keep = record.iscrowd == 0 if self.train else np.ones(len(record.labels), dtype=bool)
        target: Target = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.from_numpy(record.boxes[keep]), format="XYXY", canvas_size=(record.height, record.width)
            ),
            "labels": torch.from_numpy(record.labels[keep]),
            "image_id": record.image_id,
            "area": torch.from_numpy(record.area[keep]),
            "iscrowd": torch.from_numpy(record.iscrowd[keep]),
            "orig_size": (record.height, record.width),
        }
        if self.with_masks and record.segmentations is not None:
            masks = [
                segmentation_to_mask(s, record.height, record.width)
                if s is not None
                else box_mask(box, record.height, record.width)
                for s, box, k in zip(record.segmentations, record.boxes, keep)
                if k
            ]
            target["masks"] = tv_tensors.Mask(
                torch.from_numpy(
                    np.stack(masks) if masks else np.zeros((0, record.height, record.width), dtype=np.uint8)
                )
            )
        return target

    def decode(self, index: int) -> Tuple[Optional[Tensor], str]:
        """``(the float [3, H, W] RGB image in 0..1, "")``, or ``(None, what is wrong)`` for a file that cannot
        be read or whose size differs from its annotation's."""
        record = self.records[index]
        try:
            rgb = read_image(record.path)
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            return None, f"image {record.path} cannot be read ({error})"
        if rgb.size != (record.width, record.height):
            return None, (
                f"image {record.path} is {rgb.size[0]}x{rgb.size[1]} but its annotation says "
                f"{record.width}x{record.height}"
            )
        return TF.pil_to_tensor(rgb).float().div_(255), ""

    def read_image(self, index: int) -> Optional[Tensor]:
        """The float [3, H, W] RGB image in 0..1, or None (with a warning) if it cannot be used and
        ``skip_bad`` is on.

        Raises:
            DetectionDataError: the image cannot be used and ``skip_bad`` is off (naming the file).
        """
        image, problem = self.decode(index)
        if image is not None:
            return image
        if not self.skip_bad:
            raise DetectionDataError(
                f"{problem}; replace the file or fix its annotation, or pass --skip-bad to skip it."
            )
        warnings.warn(f"{self.name}: skipping: {problem}.", stacklevel=2)
        return None

    def __getitem__(self, index: int) -> Tuple[Optional[Tensor], Target]:
        """``(image, target)`` after ``transforms``. When training, a bad image is replaced by the next readable
        one; in evaluation it is ``(None, target)`` with ``target["unreadable"]`` saying what is wrong, so the
        evaluation scores its objects as misses or names the file (``tasks.detection.engine.evaluate``)."""
        if not self.train:
            image, problem = self.decode(index)
            if image is None:
                return None, {**self.target(index), "unreadable": problem}
            return self._transformed(image, self.target(index))
        for offset in range(len(self)):
            position = (index + offset) % len(self)
            image = self.read_image(position)
            if image is not None:
                return self._transformed(image, self.target(position))
        raise DetectionDataError(f"no image of {self.name} can be read.")

    def _transformed(self, image: Tensor, target: Target) -> Tuple[Tensor, Target]:
        image = tv_tensors.Image(image)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def collate_detection(batch: List[Tuple[Optional[Tensor], Target]]) -> Tuple[List[Optional[Tensor]], List[Target]]:
    """Lists of images and targets (images differ in size; the model batches them). An unreadable evaluation
    image stays as ``None`` beside its target (see ``DetectionDataset.__getitem__``)."""
    return [item[0] for item in batch], [item[1] for item in batch]
