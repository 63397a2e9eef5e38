"""The ResNeSt network and the registry of named variants."""

from .complexity import count_macs, count_params
from .registry import (
    ALIASES,
    MODEL_SPECS,
    EvalConfig,
    FrozenNormWithoutWeightsWarning,
    ModelSpec,
    create_model,
    get_model_spec,
    list_models,
)
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
