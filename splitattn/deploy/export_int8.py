"""``splitattn export --int8``: an exported fp32 file of any task quantised on the run's training images and
gated on its validation split.

The fp32 file (with its metadata: the task, classes, preprocessing) is quantised by NNCF
(``quantize.quantize_onnx``) on ``calibration_images`` images spread over the run's training split, prepared as
the file's task prepares them (``export.network_inputs``); then the fp32 file and the int8 file are scored by
the task's own evaluator on the validation split (``evaluation.evaluate_exported``: what ``evaluate
--exported FILE`` prints: top-1, box AP or mIoU), the change of the metric is printed overall and per class and
stored in the int8 file's metadata (``int8``), and a drop beyond ``max_drop`` points refuses the file unless
``force`` (``quantize.check_metric_drop``). The output is written only after the gate, through a temporary
name, so a refused or failed export leaves nothing behind.

What is quantised per task (``INT8_SCOPE``): a classifier and a DeepLabV3 segmenter whole (every conv and
matmul); a detector's backbone and FPN only: the region proposals, RoI heads, box decoding and NMS stay in
float, where int8 rounding would move boxes and scores and the runtimes have no int8 kernels for them.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Union

from ..errors import UsageError
from .export_common import move_into_place
from .metadata import file_format, write_metadata
from .quantize import (
    DEFAULT_CALIBRATION_IMAGES,
    DEFAULT_MAX_METRIC_DROP,
    DETECTOR_FLOAT_SCOPE,
    INT8_METADATA_KEY,
    TOOLKIT,
    MetricChange,
    check_metric_drop,
    quantize_onnx,
    quantize_openvino,
)

PathLike = Union[str, Path]
INT8_FORMATS = ("onnx", "openvino")
Log = Callable[[str], None]


@dataclass
class Int8Export:
    """A written int8 file: its ``path``, the ``files`` written (an OpenVINO ``.xml`` and ``.bin``), the metric
    ``change`` against fp32, the number of calibration images, and ``warning``: the refusal text when the drop
    was over the limit and the file was forced through."""

    path: Path
    files: List[Path]
    change: MetricChange
    calibration_images: int
    warning: Optional[str] = None


def check_int8_request(task: str, fmt: str, output: PathLike) -> None:
    """Refuse an int8 export the task has no path for, before anything is exported.

    Raises:
        UsageError: ``fmt`` is not ONNX or OpenVINO, an OpenVINO ``output`` not named ``.xml``, or a detector
            asked for in ONNX (its graph's control flow is calibrated by NNCF's OpenVINO backend only:
            ``quantize.quantize_openvino``).
    """
    if fmt not in INT8_FORMATS:
        raise UsageError(f"--int8 writes {' or '.join(INT8_FORMATS)} files (ONNX Runtime, OpenVINO), not {fmt}.")
    if fmt == "openvino" and Path(output).suffix != ".xml":
        raise UsageError(
            f"an OpenVINO model is an .xml file and a .bin beside it; name --output NAME.xml, not {output}."
        )
    if task == "detection" and fmt != "openvino":
        raise UsageError(
            "--int8 quantises detectors to OpenVINO IR only: name --format openvino --output NAME.xml (their ONNX "
            "graph's If/Loop subgraphs cannot be calibrated by NNCF's ONNX backend)."
        )


def export_int8(
    fp32_path: PathLike,
    output: PathLike,
    data: Optional[PathLike] = None,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    max_drop: float = DEFAULT_MAX_METRIC_DROP,
    force: bool = False,
    threads: Optional[int] = None,
    log: Log = print,
) -> Int8Export:
    """Quantise the exported fp32 file ``fp32_path`` and write the int8 file to ``output`` if it passes the gate.

    Args:
        fp32_path: an ONNX file or OpenVINO IR (``.xml``) of ``splitattn export`` of any task (its metadata gives
            the task, the preprocessing, the classes and the run's data); the int8 file has its format: a QDQ
            ONNX file (ONNX Runtime or OpenVINO run it) or an OpenVINO IR with FakeQuantize operations.
        output: the int8 file to write (OpenVINO: the ``.xml``; the ``.bin`` goes beside it).
        data: the run's data folder (default: the one stored in the file: the run's).
        calibration_images: training images to calibrate on (spread evenly over the training split).
        max_drop: the largest drop of the task's metric, in points, written without ``force``.
        force: write the file whatever the drop (the drop is still printed and stored).
        threads: intra-op threads of the runtime that scores the files (ONNX Runtime or OpenVINO).
        log: where the table and progress lines go.

    Returns:
        ``Int8Export``.

    Raises:
        UsageError: no data to calibrate on, or a request ``check_int8_request`` refuses.
        ExportError: the metric fell by more than ``max_drop`` and ``force`` is off (nothing is written).
        MissingDependencyError: NNCF, onnx, onnxruntime or openvino is missing.
    """
    from .evaluation import evaluate_exported
    from .export import network_inputs, read_export_metadata

    metadata, fmt = read_export_metadata(fp32_path), file_format(fp32_path)
    task = metadata.get("task", "classification")
    check_int8_request(task, fmt, output)
    calibration = network_inputs(metadata, "train", calibration_images, data)
    scope = DETECTOR_FLOAT_SCOPE if task == "detection" else None
    quantize = quantize_onnx if fmt == "onnx" else quantize_openvino
    log(f"calibrating int8 ({TOOLKIT}, {fmt}) on {len(calibration)} training images of the {task} run")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as folder:
        quantized = quantize(fp32_path, Path(folder) / output.name, calibration, scope)
        fp32 = evaluate_exported(fp32_path, data, threads=threads)
        int8 = evaluate_exported(quantized, data, threads=threads)
        per_class = {name: (value, int8.per_class.get(name)) for name, value in fp32.per_class.items()}
        change = MetricChange(fp32.metric, fp32.value, int8.value, per_class, fp32.images)
        log(change.table())
        warning = check_metric_drop(change, max_drop, force)
        entry = change.as_metadata(
            toolkit=TOOLKIT,
            calibration_images=len(calibration),
            calibration_split="train",
            max_metric_drop=max_drop,
            forced=warning is not None,
        )
        write_metadata(quantized, {INT8_METADATA_KEY: entry})
        files = move_into_place(quantized, output, fmt)
    return Int8Export(output, files, change, len(calibration), warning)
