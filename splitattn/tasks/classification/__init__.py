"""Image classification: training with the ResNeSt recipe, evaluation and prediction.

Attributes are imported on first use (``splitattn.lazy``), so the command line starts without the training stack.
"""

from typing import TYPE_CHECKING

from ...lazy import lazy_exports

if TYPE_CHECKING:  # what documentation generators and IDEs read; at run time ``lazy_exports`` below
    from ...errors import NonFiniteLossError
    from . import checkpoint as checkpoint
    from . import engine as engine
    from . import trainer as trainer
    from .checkpoint import CHECKPOINT_KEYS, load_trained_model
    from .engine import accuracy_counts, classification_loss, evaluate
    from .trainer import train

__all__ = [
    "CHECKPOINT_KEYS",
    "NonFiniteLossError",
    "accuracy_counts",
    "classification_loss",
    "evaluate",
    "load_trained_model",
    "train",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    __all__,
    ("...errors", ".checkpoint", ".engine", ".trainer"),
    submodules=("checkpoint", "engine", "trainer"),
)
