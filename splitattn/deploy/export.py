"""``splitattn export`` as a function: a run (or weights) to a checked ONNX, OpenVINO or TorchScript file.

``export_run`` reads the checkpoint's task and hands it to the task's export (``export_classification``,
``export_detection``, ``export_segmentation``), which rebuilds the model from the run's options and finds check
images in the run's data; ``export_common.write_checked`` writes the file, runs it in its runtime, compares it
with the eager model and keeps it only within the task's tolerance. ``network_inputs`` gives other tools
(int8 calibration, benchmarks) the inputs a file takes, prepared from a split of the run's data.

Which format and exporter per task (dynamic dimensions, opset; the reasons are in ``formats``):

================  ===========================  ===========================  ==========================
task              ONNX (opset 18 default)      OpenVINO IR (from the ONNX)  TorchScript
================  ===========================  ===========================  ==========================
classification    dynamo; N, H, W dynamic      N, H, W dynamic              traced; N, H, W dynamic
segmentation      dynamo; N, H, W dynamic      N, H, W dynamic              traced; N, H, W dynamic
detection         legacy; batch 1, H, W        batch 1, H, W dynamic        scripted; batch 1, H, W
================  ===========================  ===========================  ==========================
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from ..config.schemas import ClassifyConfig, DetectConfig, SegmentConfig
from ..config.values import from_checkpoint_args
from ..data.transforms import eval_transform_for
from ..engine.checkpoint import holds_bare_weights, load_checkpoint_file
from ..errors import UsageError
from .export_classification import TRAIN_SPLITS, export_onnx, prepare_classification, split_images
from .export_common import ExportResult, write_checked
from .export_detection import prepare_detection
from .export_detection import run_images as detection_images
from .export_segmentation import prepare_segmentation
from .export_segmentation import run_images as segmentation_images
from .formats import ONNX_OPSET
from .metadata import PathLike, read_export_metadata
from .runtime import eval_config_from_metadata, onnx_session

# export_onnx, read_export_metadata and onnx_session: importable from here as in the first (classification) API
__all__ = [
    "ExportResult",
    "checkpoint_task",
    "export_onnx",
    "export_run",
    "network_inputs",
    "onnx_session",
    "read_export_metadata",
]


def checkpoint_task(weights: Optional[PathLike]) -> str:
    """The task of a checkpoint (its ``task`` entry); ``classification`` for bare weights or none."""
    if weights is None:
        return "classification"
    checkpoint = load_checkpoint_file(weights)
    return "classification" if holds_bare_weights(checkpoint) else checkpoint.get("task") or "classification"


def export_run(
    weights: Optional[PathLike],
    fmt: str,
    output: PathLike,
    model: Optional[str] = None,
    ema: bool = False,
    exporter: str = "auto",
    opset: int = ONNX_OPSET,
    img_size: Optional[int] = None,
    num_classes: Optional[int] = None,
    data: Optional[PathLike] = None,
    threads: Optional[int] = None,
) -> ExportResult:
    """Export a run's checkpoint (any task), or a classifier's bare weights, to ``output``, checked first.

    Args:
        weights: ``last.pt``/``best.pt`` of ``splitattn classify|detect|segment train``, or a classifier's bare
            weights (with ``model``); None exports ``model`` with random weights (with a warning).
        fmt: ``onnx``, ``openvino`` (``output`` is the ``.xml``; the ``.bin`` goes beside it) or ``torchscript``.
        output: the file to write (replaced only by a file that passed the check).
        model: classification: the registered model of bare weights (a run names its own).
        ema: the run's EMA weights (classification runs trained with ``--ema``).
        exporter: ONNX: ``auto``, ``dynamo`` or ``legacy`` (``formats.resolve_onnx_exporter``; detectors take
            the legacy exporter).
        opset: ONNX opset written (18; under 18 with the legacy exporter only).
        img_size: classification: the evaluation size stored and checked (default: the run's).
        num_classes: classification: the classifier size of bare weights (default: read from the file).
        data: where to find the check images (default: the run's data).
        threads: threads of the runtime that checks the file.

    Returns:
        ``ExportResult``: the files written, the exporter, the stored metadata and the check.

    Raises:
        UsageError: an option the checkpoint's task does not take, an unknown format, a bad output name.
        ConfigError: an exporter or opset the model cannot be written with.
        CheckpointError: ``ema`` without EMA weights, a damaged or unknown checkpoint.
        ExportError: the export failed, or the file disagrees with the eager model (nothing is written).
    """
    task = checkpoint_task(weights)
    if task == "classification":
        spec = prepare_classification(weights, model, ema, img_size, num_classes, data)
    else:
        given = [
            flag
            for flag, value in (("--model", model), ("--img-size", img_size), ("--num-classes", num_classes))
            if value
        ]
        if given:
            raise UsageError(
                f"{', '.join(given)}: options of classifiers; {weights} is a {task} run (it names its model)."
            )
        prepare = prepare_detection if task == "detection" else prepare_segmentation
        spec = prepare(weights, ema, data)
    return write_checked(spec, fmt, output, exporter, opset, threads)


def network_inputs(
    metadata: dict, split: str = "train", count: int = 16, data: Optional[PathLike] = None
) -> List[np.ndarray]:
    """Up to ``count`` inputs of an exported file, one image each, prepared from ``split`` of its run's data
    (``data`` overrides the stored data folder) as the file's task prepares them: classification (1, C, S, S)
    through the stored ``eval_config``; segmentation (1, C, h, w) normalised at the stored ``base_size``;
    detection (3, H, W) in 0..1. Images are spread evenly over the split (e.g. int8 calibration images).

    Raises:
        UsageError: the file stores no run options (bare weights) and ``data`` is not given, or no image of the
            split can be read.
    """
    task, options = metadata.get("task", "classification"), metadata.get("run_options")
    origin = f"the metadata of {metadata.get('model_name')}"
    if task == "classification":
        config = from_checkpoint_args(ClassifyConfig, options, origin) if options else None
        transform = eval_transform_for(eval_config_from_metadata(metadata["eval_config"]))
        splits = (split,) + (TRAIN_SPLITS if split in TRAIN_SPLITS else ())
        images, _ = split_images(config, metadata["in_chans"], count, data, splits)
        inputs = [transform(image)[None].numpy() for image in images]
    elif options is None:
        raise UsageError(f"{origin}: no run options stored, so no run data to read.")
    elif task == "detection":
        config = from_checkpoint_args(DetectConfig, options, origin)
        inputs = [image.numpy() for image in detection_images(config, metadata["classes"], count, split, data)[0]]
    else:
        config = from_checkpoint_args(SegmentConfig, options, origin)
        images = segmentation_images(config, metadata["classes"], count, split, data)[0]
        inputs = [image[None].numpy() for image in images]
    if not inputs:
        raise UsageError(f"no image of the {split!r} split of {data or (options or {}).get('data')} could be read.")
    return inputs
