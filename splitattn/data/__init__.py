"""Image classification data: folder, CSV and built-in digits data sets, and the recipe's transforms."""
from .datasets import (
    IMAGE_EXTENSIONS, ArrayImageDataset, ImageListDataset, collate_skip_bad, digits_datasets, find_split, load_split,
    open_rgb,
)
from .transforms import (
    CenterCropResize, Lighting, build_eval_transform, build_train_transform, create_eval_transform, eval_transform_for,
    mixup_batch, smooth_one_hot,
)

__all__ = [
    "IMAGE_EXTENSIONS", "ArrayImageDataset", "CenterCropResize", "ImageListDataset", "Lighting", "build_eval_transform",
    "build_train_transform", "collate_skip_bad", "create_eval_transform", "digits_datasets", "eval_transform_for",
    "find_split", "load_split", "mixup_batch", "open_rgb", "smooth_one_hot",
]
