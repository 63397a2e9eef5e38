"""Deployment and speed: the inference fast path, export to ONNX/TorchScript with metadata, running exported
files, benchmarks."""
from .export import (
    EXPORT_FORMATS, export_metadata, export_model, export_onnx, export_torchscript, load_model_for_export,
    read_export_metadata,
)
from .optimize import InferenceModel, cpu_supports_bf16, fold_batch_norm, fold_conv_norm, optimize_for_inference
from .runtime import ExportedClassifier

__all__ = [
    "EXPORT_FORMATS", "ExportedClassifier", "InferenceModel", "cpu_supports_bf16", "export_metadata", "export_model",
    "export_onnx", "export_torchscript", "fold_batch_norm", "fold_conv_norm", "load_model_for_export",
    "optimize_for_inference", "read_export_metadata",
]
