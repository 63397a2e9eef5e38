"""Semantic segmentation: DeepLabV3/FCN on dilated ResNeSt, pixel accuracy and mIoU."""
from .model import ASPP_RATES, AUX_WEIGHT, HEADS, SegmentationModel, create_segmentation_model, segmentation_loss

__all__ = ["ASPP_RATES", "AUX_WEIGHT", "HEADS", "SegmentationModel", "create_segmentation_model", "segmentation_loss"]
