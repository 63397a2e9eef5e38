"""splitattn: ResNeSt (Split-Attention Networks) models, weights and task pipelines.

Every attribute is imported on first use (``splitattn.lazy``): ``splitattn.create_model`` loads the model
library (torch) when it is first asked for, ``splitattn.data.create_eval_transform`` the data pipeline
(torchvision), and ``import splitattn`` itself loads neither. So the exported-file runtimes
(``splitattn.deploy.runtime``: ONNX Runtime or OpenVINO, NumPy and Pillow) run in a process without torch.
"""

from typing import TYPE_CHECKING

from .lazy import lazy_exports
from .version import __version__

if TYPE_CHECKING:  # what documentation generators and IDEs read; at run time ``lazy_exports`` below
    from . import config as config
    from . import data as data
    from . import deploy as deploy
    from . import deps as deps
    from . import devices as devices
    from . import engine as engine
    from . import layers as layers
    from . import models as models
    from . import optimize as optimize
    from . import tasks as tasks
    from . import viz as viz
    from . import weights as weights
    from .layers.drop_block import DropBlock2d
    from .layers.split_attention import SplitAttention
    from .models.factory import create_model
    from .models.registry import get_model_spec, list_models
    from .models.resnest import ResNeSt, ResNeStFeatures
    from .optimize.inference import optimize_for_inference

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

__getattr__, __dir__ = lazy_exports(
    __name__,
    __all__,
    (
        ".models.registry",
        ".models.resnest",
        ".layers.split_attention",
        ".layers.drop_block",
        ".models.factory",
        ".optimize.inference",
    ),
    submodules=(
        "config",
        "data",
        "deploy",
        "deps",
        "devices",
        "engine",
        "layers",
        "models",
        "optimize",
        "tasks",
        "viz",
        "weights",
    ),
)
