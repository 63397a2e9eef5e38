"""Semantic segmentation: DeepLabV3/FCN on dilated ResNeSt, pixel accuracy and mIoU.

Attributes are imported on first use (``splitattn.lazy``): torchvision's segmentation heads load only when needed.
"""

from typing import TYPE_CHECKING

from ...lazy import lazy_exports

if TYPE_CHECKING:  # what documentation generators and IDEs read; at run time ``lazy_exports`` below
    from . import checkpoint as checkpoint
    from . import engine as engine
    from . import inference as inference
    from . import metrics as metrics
    from . import model as model
    from . import trainer as trainer
    from . import visualize as visualize
    from .model import (
        ASPP_RATES,
        AUX_WEIGHT,
        HEADS,
        SegmentationModel,
        create_segmentation_model,
        segmentation_loss,
    )

__all__ = [
    "ASPP_RATES",
    "AUX_WEIGHT",
    "HEADS",
    "SegmentationModel",
    "create_segmentation_model",
    "segmentation_loss",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    __all__,
    (".model",),
    submodules=("checkpoint", "engine", "inference", "metrics", "model", "trainer", "visualize"),
)
