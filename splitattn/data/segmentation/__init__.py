"""Semantic segmentation data: ADE20K, Cityscapes, Pascal VOC and generic image/label folders.

``label_maps`` turns stored values or colours into training ids, ``datasets`` pairs and checks the files,
``layouts`` knows the published folder layouts (``build_dataset``), ``transforms`` crops, flips and
normalises image and label map together. The standard class lists live in ``splitattn.data.labels``.
"""

from ...errors import SegmentationDataError
from ..labels import ADE20K_CLASSES, CAMVID_CLASSES, CAMVID_IGNORE_VALUE, CITYSCAPES_TRAIN_IDS, VOC_CLASSES
from .datasets import SegmentationDataset, collate_eval
from .label_maps import IGNORE_INDEX, LabelPalette, identity_lut, read_label, read_palette
from .layouts import (
    DATASET_KINDS,
    ade20k_dataset,
    build_dataset,
    cityscapes_dataset,
    folder_dataset,
    parse_classes,
    voc_dataset,
)
from .transforms import SegmentationEvalTransform, SegmentationTrainTransform, normalize_image

__all__ = [
    "ADE20K_CLASSES",
    "CAMVID_CLASSES",
    "CAMVID_IGNORE_VALUE",
    "CITYSCAPES_TRAIN_IDS",
    "DATASET_KINDS",
    "IGNORE_INDEX",
    "VOC_CLASSES",
    "LabelPalette",
    "SegmentationDataError",
    "SegmentationDataset",
    "SegmentationEvalTransform",
    "SegmentationTrainTransform",
    "ade20k_dataset",
    "build_dataset",
    "cityscapes_dataset",
    "collate_eval",
    "folder_dataset",
    "identity_lut",
    "normalize_image",
    "parse_classes",
    "read_label",
    "read_palette",
    "voc_dataset",
]
