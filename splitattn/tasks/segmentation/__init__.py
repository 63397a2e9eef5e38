"""Semantic segmentation: DeepLabV3/FCN on dilated ResNeSt, pixel accuracy and mIoU.

Attributes are imported on first use (``splitattn.lazy``): torchvision's segmentation heads load only when needed."""

from ...lazy import lazy_attributes

_WHERE = {
    name: ".model"
    for name in (
        "ASPP_RATES",
        "AUX_WEIGHT",
        "HEADS",
        "SegmentationModel",
        "create_segmentation_model",
        "segmentation_loss",
    )
}
__all__ = sorted(_WHERE)
__getattr__ = lazy_attributes(__name__, _WHERE)
