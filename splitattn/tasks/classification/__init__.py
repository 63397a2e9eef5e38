"""Image classification: training with the ResNeSt recipe, evaluation and prediction."""
from ...engine.loop import NonFiniteLossError
from .checkpoint import CHECKPOINT_KEYS, load_trained_model
from .engine import accuracy_counts, classification_loss, evaluate
from .trainer import train

__all__ = [
    "CHECKPOINT_KEYS", "NonFiniteLossError", "accuracy_counts", "classification_loss", "evaluate",
    "load_trained_model", "train",
]
