"""splitattn: ResNeSt (Split-Attention Networks) models, weights and task pipelines."""
from .layers import DropBlock2d, SplitAttention
from .models import ResNeSt, ResNeStFeatures, create_model, get_model_spec, list_models
from .deploy import optimize_for_inference

__version__ = "0.1.0"

__all__ = [
    "DropBlock2d", "ResNeSt", "ResNeStFeatures", "SplitAttention", "__version__",
    "create_model", "get_model_spec", "list_models", "optimize_for_inference",
]
