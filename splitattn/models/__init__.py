"""The ResNeSt network, the evaluation protocols of its weights, the registry of named variants and the factory."""

from .complexity import count_macs, count_params
from .eval_config import EvalConfig
from .factory import FrozenNormWithoutWeightsWarning, create_model
from .registry import ALIASES, MODEL_SPECS, ModelSpec, get_model_spec, list_models
from .resnest import Bottleneck, ResNeSt, ResNeStFeatures

__all__ = [
    "ALIASES",
    "MODEL_SPECS",
    "Bottleneck",
    "EvalConfig",
    "FrozenNormWithoutWeightsWarning",
    "ModelSpec",
    "ResNeSt",
    "ResNeStFeatures",
    "count_macs",
    "count_params",
    "create_model",
    "get_model_spec",
    "list_models",
]
