"""Deployment, the artifact level above the tasks: export of every task's runs to ONNX, OpenVINO IR and
TorchScript with their metadata, the exported-file runtimes (no torch needed), their evaluation, benchmarks.
The model-level fast path (``optimize_for_inference``) is ``splitattn.optimize``.

Attributes are imported on first use (``splitattn.lazy``): ``splitattn.deploy.load_exported`` runs in a process
without torch (ONNX Runtime or OpenVINO, NumPy, Pillow).
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:  # what documentation generators and IDEs read; at run time ``lazy_exports`` below
    from . import benchmark as benchmark
    from . import evaluation as evaluation
    from . import export as export
    from . import export_classification as export_classification
    from . import export_common as export_common
    from . import export_detection as export_detection
    from . import export_segmentation as export_segmentation
    from . import formats as formats
    from . import metadata as metadata
    from . import runtime as runtime
    from .evaluation import TaskMetrics, evaluate_exported
    from .export import export_run, network_inputs
    from .export_classification import (
        export_metadata,
        export_model,
        export_onnx,
        export_torchscript,
        load_model_for_export,
    )
    from .export_common import ExportResult
    from .formats import onnx_to_openvino
    from .metadata import EXPORT_FORMATS, read_export_metadata, write_onnx_metadata
    from .runtime import (
        ExportedClassifier,
        ExportedDetector,
        ExportedModel,
        ExportedSegmenter,
        load_exported,
        predict_exported,
    )

__all__ = [
    "EXPORT_FORMATS",
    "ExportResult",
    "ExportedClassifier",
    "ExportedDetector",
    "ExportedModel",
    "ExportedSegmenter",
    "TaskMetrics",
    "evaluate_exported",
    "export_metadata",
    "export_model",
    "export_onnx",
    "export_run",
    "export_torchscript",
    "load_exported",
    "load_model_for_export",
    "network_inputs",
    "onnx_to_openvino",
    "predict_exported",
    "read_export_metadata",
    "write_onnx_metadata",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    __all__,
    (".metadata", ".runtime", ".export_common", ".formats", ".export_classification", ".export", ".evaluation"),
    submodules=(
        "benchmark",
        "evaluation",
        "export",
        "export_classification",
        "export_common",
        "export_detection",
        "export_segmentation",
        "formats",
        "metadata",
        "runtime",
    ),
)
