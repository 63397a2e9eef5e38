"""Image data: one image reader for every task, the classification data sets (folder, CSV, built-in digits)
and the recipe's transforms; detection and segmentation data live in their own modules."""

from .classification import (
    IMAGE_EXTENSIONS,
    ArrayImageDataset,
    ImageListDataset,
    collate_skip_bad,
    digits_datasets,
    find_split,
    load_split,
)
from .io import channel_stats, image_size, is_hidden, read_image
from .transforms import (
    CenterCropResize,
    Lighting,
    build_eval_transform,
    build_train_transform,
    create_eval_transform,
    eval_transform_for,
    mixup_batch,
    smooth_one_hot,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ArrayImageDataset",
    "CenterCropResize",
    "ImageListDataset",
    "Lighting",
    "build_eval_transform",
    "build_train_transform",
    "channel_stats",
    "collate_skip_bad",
    "create_eval_transform",
    "digits_datasets",
    "eval_transform_for",
    "find_split",
    "image_size",
    "is_hidden",
    "load_split",
    "mixup_batch",
    "read_image",
    "smooth_one_hot",
]
