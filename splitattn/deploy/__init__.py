"""Deployment and speed: the inference fast path, export to ONNX/TorchScript with metadata, running exported
files, benchmarks. Attributes are imported on first use (``utils.lazy``)."""

from ..utils.lazy import lazy_attributes

_WHERE = {
    **{
        name: ".export"
        for name in (
            "EXPORT_FORMATS",
            "export_metadata",
            "export_model",
            "export_onnx",
            "export_torchscript",
            "load_model_for_export",
            "read_export_metadata",
        )
    },
    **{
        name: ".optimize"
        for name in (
            "InferenceModel",
            "cpu_supports_bf16",
            "fold_batch_norm",
            "fold_conv_norm",
            "optimize_for_inference",
        )
    },
    "ExportedClassifier": ".runtime",
}
__all__ = sorted(_WHERE)
__getattr__ = lazy_attributes(__name__, _WHERE)
