"""Image data: one image reader for every task, the standard class lists, the classification data sets (folder,
CSV, built-in digits) and the recipe's transforms; detection and segmentation data are subpackages.

Attributes are imported on first use (``splitattn.lazy``): the transforms need torchvision, which
``import splitattn.data.io`` does not load.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:  # what documentation generators and IDEs read; at run time ``lazy_exports`` below
    from . import classification as classification
    from . import detection as detection
    from . import io as io
    from . import labels as labels
    from . import segmentation as segmentation
    from . import transforms as transforms
    from .classification import (
        ArrayImageDataset,
        ImageListDataset,
        collate_skip_bad,
        digits_datasets,
        find_split,
        load_split,
    )
    from .io import IMAGE_EXTENSIONS, ImageReader, channel_stats, image_files, image_size, is_hidden, read_image
    from .labels import format_predictions, imagenet_class_names
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
    "ImageReader",
    "Lighting",
    "build_eval_transform",
    "build_train_transform",
    "channel_stats",
    "collate_skip_bad",
    "create_eval_transform",
    "digits_datasets",
    "eval_transform_for",
    "find_split",
    "format_predictions",
    "image_files",
    "image_size",
    "imagenet_class_names",
    "is_hidden",
    "load_split",
    "mixup_batch",
    "read_image",
    "smooth_one_hot",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    __all__,
    (".io", ".labels", ".classification", ".transforms"),  # cheapest first
    submodules=("classification", "detection", "io", "labels", "segmentation", "transforms"),
)
