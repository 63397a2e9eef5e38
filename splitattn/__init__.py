"""splitattn: ResNeSt (Split-Attention Networks) models, weights and task pipelines.

Importing the package loads the model library only (torch): the layers, the models and their
factory, the weights and the model-level fast path (``optimize``). The subpackages that need
torchvision, pycocotools or matplotlib (``data``, ``tasks``, ``deploy``, ``engine``, ``viz``) are
attributes imported on first use (``splitattn.lazy``), so ``splitattn.data.create_eval_transform``
works after ``import splitattn`` without every ``import splitattn`` paying for it.
"""

from typing import TYPE_CHECKING

from .layers.drop_block import DropBlock2d
from .layers.split_attention import SplitAttention
from .lazy import lazy_exports
from .models.factory import create_model
from .models.registry import get_model_spec, list_models
from .models.resnest import ResNeSt, ResNeStFeatures
from .optimize.inference import optimize_for_inference
from .version import __version__

if TYPE_CHECKING:  # the subpackages reachable as attributes, imported on first use (see the end)
    from . import config as config
    from . import data as data
    from . import deploy as deploy
    from . import deps as deps
    from . import devices as devices
    from . import engine as engine
    from . import tasks as tasks
    from . import viz as viz

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
    __name__, (), submodules=("config", "data", "deploy", "deps", "devices", "engine", "tasks", "viz")
)
