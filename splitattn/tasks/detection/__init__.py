"""Object detection and instance segmentation: Faster/Mask/Cascade (Mask) R-CNN on ResNeSt-FPN, COCO-style evaluation."""
from .model import ARCHS, create_detection_model, resnest_fpn_backbone

__all__ = ["ARCHS", "create_detection_model", "resnest_fpn_backbone"]
