"""The ResNeSt network, the evaluation protocols of its weights, the registry of named variants and the factory.

Attributes are imported on first use (``splitattn.lazy``): ``splitattn.models.eval_config`` is a leaf without
torch, which the exported-file runtimes (``splitattn.deploy.runtime``) read in processes without torch.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:  # what documentation generators and IDEs read; at run time ``lazy_exports`` below
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

__getattr__, __dir__ = lazy_exports(
    __name__, __all__, (".eval_config", ".registry", ".resnest", ".complexity", ".factory")
)
