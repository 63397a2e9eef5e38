"""``splitattn export --int8``: an exported fp32 file quantised on the run's training images and gated on its
validation split.

The fp32 file (with its metadata: the task, classes, preprocessing) is quantised by NNCF
(``quantize.quantize_onnx``) on ``calibration_images`` images drawn from the run's training split through
the file's own evaluation preprocessing; then the fp32 file and the int8 file are scored by the same
evaluator on the validation split, the change of the task's metric is printed overall and per class and
stored in the int8 file's metadata (``int8``), and a drop beyond ``max_drop`` points refuses the file unless
``force`` (``quantize.check_metric_drop``). The output is written only after the gate, through a temporary
name, so a refused or failed export leaves nothing behind.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np

from ..deps import require
from ..errors import UsageError
from .quantize import (
    DEFAULT_CALIBRATION_IMAGES,
    DEFAULT_MAX_METRIC_DROP,
    INT8_METADATA_KEY,
    TOOLKIT,
    MetricChange,
    check_metric_drop,
    quantize_onnx,
)

PathLike = Union[str, Path]
INT8_FORMATS = ("onnx",)
Log = Callable[[str], None]


@dataclass
class Int8Export:
    """A written int8 file: its ``path``, the metric ``change`` against fp32, the number of calibration images,
    and ``warning``: the refusal text when the drop was over the limit and the file was forced through."""

    path: Path
    change: MetricChange
    calibration_images: int
    warning: Optional[str] = None


def _classifier_scores(path: Path, images, labels, classes, threads: Optional[int]) -> Tuple[float, Dict]:
    """Top-1 (%) of the ONNX classifier ``path`` on ``images`` and each class's top-1 (None without images)."""
    from .export import onnx_session

    session = onnx_session(path, threads)
    name = session.get_inputs()[0].name
    batches = [session.run(None, {name: images[i : i + 32].numpy()})[0] for i in range(0, len(images), 32)]
    predicted = np.concatenate(batches).argmax(1)
    truth = labels.numpy()
    per_class = {}
    for index, class_name in enumerate(classes):
        mask = truth == index
        per_class[class_name] = 100.0 * float((predicted[mask] == index).mean()) if mask.any() else None
    return 100.0 * float((predicted == truth).mean()), per_class


def export_int8(
    fp32_path: PathLike,
    output: PathLike,
    data: Optional[PathLike],
    fmt: str = "onnx",
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    max_drop: float = DEFAULT_MAX_METRIC_DROP,
    force: bool = False,
    threads: Optional[int] = None,
    seed: int = 0,
    log: Log = print,
) -> Int8Export:
    """Quantise the exported fp32 file ``fp32_path`` and write the int8 file to ``output`` if it passes the gate.

    Args:
        fp32_path: an ONNX file of ``splitattn export`` (its metadata gives the preprocessing and classes).
        output: the int8 file to write.
        data: the run's data folder (``train/`` for calibration, ``val/`` or ``test/`` for the gate).
        fmt: ``onnx`` (a QDQ ONNX file for ONNX Runtime or OpenVINO).
        calibration_images: training images to calibrate on (drawn at random with ``seed``).
        max_drop: the largest drop of the task's metric, in points, written without ``force``.
        force: write the file whatever the drop (the drop is still printed and stored).
        threads: intra-op threads of the runtime that scores the files.
        log: where the table and progress lines go.

    Returns:
        ``Int8Export``.

    Raises:
        UsageError: no data, or a format without an int8 path.
        ExportError: the metric fell by more than ``max_drop`` and ``force`` is off (nothing is written).
        MissingDependencyError: NNCF, onnx or onnxruntime is missing.
    """
    from .export import read_export_metadata
    from .run_data import calibration_images as training_images
    from .run_data import validation_images
    from .runtime import eval_config_from_metadata

    if fmt not in INT8_FORMATS:
        raise UsageError(f"--int8 writes {' or '.join(INT8_FORMATS)} files, not {fmt!r}.")
    if not data:
        raise UsageError(
            "--int8 calibrates on the run's training images and checks on its validation images: the checkpoint "
            "names no data folder, so pass --data DIR (with train/ and val/)."
        )
    onnx = require("onnx", "export", "writing an int8 ONNX file")
    metadata = read_export_metadata(fp32_path)
    classes, in_chans, eval_config = (
        metadata["classes"],
        int(metadata["in_chans"]),
        eval_config_from_metadata(metadata["eval_config"]),
    )
    calibration = training_images(data, eval_config, classes, in_chans, calibration_images, seed)
    log(f"calibrating int8 ({TOOLKIT}) on {len(calibration)} training images of {data}")
    with tempfile.TemporaryDirectory(prefix="splitattn-int8-") as folder:
        quantized = quantize_onnx(fp32_path, Path(folder) / "int8.onnx", (image[None].numpy() for image in calibration))
        images, labels = validation_images(data, eval_config, classes, in_chans)
        fp32_top1, fp32_classes = _classifier_scores(Path(fp32_path), images, labels, classes, threads)
        int8_top1, int8_classes = _classifier_scores(quantized, images, labels, classes, threads)
        change = MetricChange(
            "top1", fp32_top1, int8_top1, {c: (fp32_classes[c], int8_classes[c]) for c in classes}, len(images)
        )
        log(change.table())
        warning = check_metric_drop(change, max_drop, force)
        entry = change.as_metadata(
            toolkit=TOOLKIT,
            calibration_images=len(calibration),
            calibration_split="train",
            max_metric_drop=max_drop,
            forced=warning is not None,
        )
        proto = onnx.load(str(quantized))
        for prop in list(proto.metadata_props):
            if prop.key == INT8_METADATA_KEY:
                proto.metadata_props.remove(prop)
        proto.metadata_props.add(key=INT8_METADATA_KEY, value=json.dumps(entry))
        output = Path(output)
        partial = output.with_name(output.name + ".partial")
        onnx.save(proto, str(partial))
        partial.replace(output)
    return Int8Export(output, change, len(calibration), warning)
