"""Deployment: export to ONNX/TorchScript with metadata, running exported files, benchmarks (the model-level
fast path is ``splitattn.optimize``). Attributes are imported on first use (``splitattn.lazy``)."""

from ..lazy import lazy_attributes

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
    "ExportedClassifier": ".runtime",
}
__all__ = sorted(_WHERE)
__getattr__ = lazy_attributes(__name__, _WHERE)
