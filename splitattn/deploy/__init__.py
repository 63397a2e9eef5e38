"""Deployment, the artifact level above the tasks: export to ONNX/TorchScript with metadata, running exported
files, benchmarks. The model-level fast path (``optimize_for_inference``) is ``splitattn.optimize``.

Attributes are imported on first use (``splitattn.lazy``).
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:  # what documentation generators and IDEs read; at run time ``lazy_exports`` below
    from . import benchmark as benchmark
    from . import export as export
    from . import runtime as runtime
    from .export import (
        EXPORT_FORMATS,
        export_metadata,
        export_model,
        export_onnx,
        export_torchscript,
        load_model_for_export,
        read_export_metadata,
    )
    from .runtime import ExportedClassifier, predict_exported

__all__ = [
    "EXPORT_FORMATS",
    "ExportedClassifier",
    "export_metadata",
    "export_model",
    "export_onnx",
    "export_torchscript",
    "load_model_for_export",
    "predict_exported",
    "read_export_metadata",
]

__getattr__, __dir__ = lazy_exports(
    __name__, __all__, (".export", ".runtime"), submodules=("benchmark", "export", "runtime")
)
