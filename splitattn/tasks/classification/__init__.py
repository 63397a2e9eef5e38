"""Image classification: training with the ResNeSt recipe, evaluation and prediction.

Attributes are imported on first use (``splitattn.lazy``), so the command line starts without the training stack."""

from ...lazy import lazy_attributes

_WHERE = {
    "NonFiniteLossError": "...engine.loop",
    "CHECKPOINT_KEYS": ".checkpoint",
    "load_trained_model": ".checkpoint",
    "accuracy_counts": ".engine",
    "classification_loss": ".engine",
    "evaluate": ".engine",
    "train": ".trainer",
}
__all__ = sorted(_WHERE)
__getattr__ = lazy_attributes(__name__, _WHERE)
