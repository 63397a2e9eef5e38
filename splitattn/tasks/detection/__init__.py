"""Object detection and instance segmentation: Faster/Mask/Cascade (Mask) R-CNN on ResNeSt-FPN, COCO-style evaluation.

Attributes are imported on first use (``splitattn.lazy``): torchvision's detection models load only when needed.
"""

from typing import TYPE_CHECKING

from ...lazy import lazy_exports

if TYPE_CHECKING:  # what documentation generators and IDEs read; at run time ``lazy_exports`` below
    from . import cascade as cascade
    from . import checkpoint as checkpoint
    from . import engine as engine
    from . import evaluation as evaluation
    from . import inference as inference
    from . import model as model
    from . import trainer as trainer
    from .model import ARCHS, create_detection_model, resnest_fpn_backbone

__all__ = ["ARCHS", "create_detection_model", "resnest_fpn_backbone"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    __all__,
    (".model",),
    submodules=("cascade", "checkpoint", "engine", "evaluation", "inference", "model", "trainer"),
)
