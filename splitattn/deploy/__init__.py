"""Deployment and speed: the inference fast path, export to ONNX/TorchScript, benchmarks."""
from .export import EXPORT_FORMATS, export_model, export_onnx, export_torchscript, load_model_for_export
from .optimize import InferenceModel, cpu_supports_bf16, fold_batch_norm, fold_conv_norm, optimize_for_inference

__all__ = [
    "EXPORT_FORMATS", "InferenceModel", "cpu_supports_bf16", "export_model", "export_onnx", "export_torchscript",
    "fold_batch_norm", "fold_conv_norm", "load_model_for_export", "optimize_for_inference",
]
