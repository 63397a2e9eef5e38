"""Object detection and instance segmentation: Faster/Mask/Cascade (Mask) R-CNN on ResNeSt-FPN, COCO-style evaluation.

Attributes are imported on first use (``splitattn.lazy``): torchvision's detection models load only when needed."""

from ...lazy import lazy_attributes

_WHERE = {"ARCHS": ".model", "create_detection_model": ".model", "resnest_fpn_backbone": ".model"}
__all__ = sorted(_WHERE)
__getattr__ = lazy_attributes(__name__, _WHERE)
