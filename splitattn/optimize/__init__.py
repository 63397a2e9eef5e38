"""The model-level fast path: inference (BatchNorm folding, channels_last, bf16, compiled) and training
(compilation under a memory budget, gradient checkpointing)."""

from .inference import InferenceModel, fold_batch_norm, fold_conv_norm, optimize_for_inference
from .training import compile_for_training, enable_gradient_checkpointing

__all__ = [
    "InferenceModel",
    "compile_for_training",
    "enable_gradient_checkpointing",
    "fold_batch_norm",
    "fold_conv_norm",
    "optimize_for_inference",
]
