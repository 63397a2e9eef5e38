"""Image classification: training with the ResNeSt recipe, evaluation and prediction."""
from .checkpoint import CHECKPOINT_KEYS, load_trained_model
from .engine import accuracy_counts, evaluate, train_one_epoch
from .trainer import NonFiniteLossError, train

__all__ = [
    "CHECKPOINT_KEYS", "NonFiniteLossError", "accuracy_counts", "evaluate", "load_trained_model", "train",
    "train_one_epoch",
]
