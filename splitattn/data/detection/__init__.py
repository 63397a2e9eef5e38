"""Object detection data: COCO json, Pascal VOC XML and YOLO txt data sets in torchvision's detection convention."""

from .datasets import (
    DATASET_KINDS,
    STATS_KEYS,
    CocoDetectionDataset,
    DetectionDataError,
    DetectionDataset,
    VocDetectionDataset,
    VocFolderDetectionDataset,
    YoloDetectionDataset,
    build_detection_dataset,
    collate_detection,
    detect_layout,
    segmentation_to_mask,
)
from .transforms import build_detection_train_transform

__all__ = [
    "CocoDetectionDataset",
    "DATASET_KINDS",
    "DetectionDataError",
    "DetectionDataset",
    "STATS_KEYS",
    "VocDetectionDataset",
    "VocFolderDetectionDataset",
    "YoloDetectionDataset",
    "build_detection_dataset",
    "build_detection_train_transform",
    "collate_detection",
    "detect_layout",
    "segmentation_to_mask",
]
