"""splitattn: ResNeSt (Split-Attention Networks) models, weights and task pipelines.

Importing the package loads the model library only (torch); torchvision, the compiler and the
task pipelines are imported when first used. ``optimize_for_inference`` is resolved on first
access (PEP 562) for that reason.
"""

from .layers import DropBlock2d, SplitAttention
from .lazy import lazy_attributes
from .models import ResNeSt, ResNeStFeatures, create_model, get_model_spec, list_models

__version__ = "0.1.0"

__all__ = [
    "DropBlock2d",
    "ResNeSt",
    "ResNeStFeatures",
    "SplitAttention",
    "__version__",
    "create_model",
    "get_model_spec",
    "list_models",
    "optimize_for_inference",
]

__getattr__ = lazy_attributes(__name__, {"optimize_for_inference": ".optimize.inference"})
