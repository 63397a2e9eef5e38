"""int8 post-training quantisation of an exported ONNX file or OpenVINO IR, gated by the task's metric on real
data.

**Toolkit: NNCF's ONNX backend**, chosen by measurement (resnest14 trained on imagenette-mini, 300
calibration images, the 500 validation images; BENCHMARKS.md and docs/deployment.md have the tables). Its
quantiser (min-max ranges of symmetric u8/s8 activations and per-channel s8 weights, then a fast bias
correction that compensates each layer's mean shift) kept top-1 within +0.8 points of fp32 and agreed with the
fp32 argmax on 96 % of the images, where ONNX Runtime's ``quantize_static`` (MinMax, per channel) lost 1.6
points (89 % agreement) and PT2E lost 0.6 (90 %). It writes a standard QDQ ONNX file
(QuantizeLinear/DequantizeLinear pairs around each conv and matmul): dynamic batch and image size kept, run by
ONNX Runtime's int8 kernels (2.1-2.8x its own fp32 speed on an AVX-512 VNNI CPU) and read by OpenVINO as
well, with neither torch nor NNCF needed to serve it. (Fastest in torch is PT2E behind the fast path:
``optimize_for_inference(precision="int8")``.)

**OpenVINO IR** (``quantize_openvino``): the same NNCF algorithm on the OpenVINO model (FakeQuantize operations,
int8 kernels of OpenVINO's CPU plugin). It is the detectors' path: their ONNX graph holds control flow (``If``,
``Loop``: the empty-image branch, the mask pasting) whose subgraphs read values of the outer graph, which NNCF's
ONNX backend cannot calibrate (ONNX Runtime rejects its statistics graph); the OpenVINO backend quantises the
``If`` bodies recursively. A detector is quantised in its backbone and FPN only (``DETECTOR_FLOAT_SCOPE``).

**The gate** (``MetricChange``): the int8 file and the fp32 file are scored by the same evaluator on the
run's validation split (top-1, box AP or mIoU, overall and per class); the change in points is printed,
stored in the int8 file's metadata (key ``int8``), and a drop beyond ``max_drop`` (default 1 point) refuses
the file unless forced, naming the classes that lost most.

Reference: NNCF post-training quantisation (``nncf.quantize``), ONNX operators QuantizeLinear /
DequantizeLinear (opset >= 13, per-axis scales).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np

from ..deps import openvino_core, require
from ..errors import ExportError, UsageError
from ..optimize.compiled import quiet_cpp_extension
from .metadata import read_openvino_metadata, set_openvino_metadata

DEFAULT_CALIBRATION_IMAGES = 300  # NNCF's default subset; 300 images fixed the ranges on imagenette-mini
DEFAULT_MAX_METRIC_DROP = 1.0  # points of the task's metric
INT8_METADATA_KEY = "int8"
TOOLKIT = "nncf"
PathLike = Union[str, Path]


# detectors: the backbone (body and FPN) in int8; proposals, RoI heads, box decoding and NMS stay in float.
# The names are the ONNX node names of the exported detector (``export_detection``: the network is ``model``).
DETECTOR_FLOAT_SCOPE = {"patterns": [r"^(?!/model/backbone/).*"]}


def _nncf():
    quiet_cpp_extension()  # NNCF imports torch's extension builder, which warns about CUDA on CPU-only machines
    return require("nncf", "openvino", "int8 quantisation (NNCF)")


def _quantize(nncf, model: Any, name: Optional[str], calibration, ignored_scope) -> Any:
    """``nncf.quantize`` of an ONNX ``ModelProto`` or an ``openvino.Model`` on every calibration input."""
    samples = [np.ascontiguousarray(sample, dtype=np.float32) for sample in calibration]
    if not samples:
        raise UsageError("int8 quantisation needs calibration images; none were given.")
    scope = nncf.IgnoredScope(**ignored_scope, validate=False) if ignored_scope else None
    return nncf.quantize(
        model,
        nncf.Dataset([{name: sample} if name else sample for sample in samples]),
        subset_size=len(samples),
        preset=nncf.QuantizationPreset.PERFORMANCE,
        ignored_scope=scope,
    )


def quantize_onnx(
    fp32_path: PathLike,
    output: PathLike,
    calibration: Iterable[np.ndarray],
    ignored_scope: Optional[Dict[str, List[str]]] = None,
) -> Path:
    """Write the int8 (QDQ) version of an fp32 ONNX file, calibrated on ``calibration``.

    Args:
        fp32_path: an ONNX file with one image input (its metadata is carried over).
        output: the int8 file to write.
        calibration: model inputs, one array per step (float32, the input's layout, e.g. (1, C, H, W)
            preprocessed images); all of them are used.
        ignored_scope: nodes to leave in float: ``{"names": [...], "patterns": [regex, ...], "types":
            [op type, ...]}`` (``nncf.IgnoredScope``), e.g. a detector's box heads and NMS.

    Returns:
        ``output``.

    Raises:
        MissingDependencyError: NNCF or onnx is not installed (``pip install 'splitattn[openvino]'``).
        UsageError: no calibration inputs.
    """
    onnx = require("onnx", "export", "int8 quantisation of an ONNX file")
    nncf = _nncf()
    model = onnx.load(str(fp32_path))
    quantized = _quantize(nncf, model, model.graph.input[0].name, calibration, ignored_scope)
    output = Path(output)
    onnx.save(quantized, str(output))
    return output


def quantize_openvino(
    fp32_path: PathLike,
    output: PathLike,
    calibration: Iterable[np.ndarray],
    ignored_scope: Optional[Dict[str, List[str]]] = None,
) -> Path:
    """Write the int8 version of an fp32 OpenVINO IR (``output``: the ``.xml``, its ``.bin`` beside it),
    calibrated on ``calibration``: NNCF's OpenVINO backend (FakeQuantize operations that the CPU plugin runs
    with int8 kernels). Unlike NNCF's ONNX backend it calibrates graphs with control flow (a detector's If and
    Loop). Arguments, errors and the ``splitattn`` metadata as ``quantize_onnx``.
    """
    openvino = require("openvino", "openvino", "int8 quantisation of an OpenVINO model")
    nncf = _nncf()
    model = openvino_core().read_model(str(fp32_path))
    quantized = _quantize(nncf, model, None, calibration, ignored_scope)
    set_openvino_metadata(quantized, read_openvino_metadata(model))
    output = Path(output)
    openvino.save_model(quantized, str(output), compress_to_fp16=False)
    return output


def _points(value: Optional[float], sign: str = "") -> str:
    return "-" if value is None or math.isnan(value) else f"{value:{sign}.2f}"


@dataclass
class MetricChange:
    """The task's metric of the fp32 model and of the int8 file on the same data, overall and per class.

    ``metric``: ``top1``, ``bbox AP`` or ``mIoU``; values in percent; ``per_class``: class name -> (fp32, int8),
    None where a class has no value (no images, no ground truth); ``images``: images scored.
    """

    metric: str
    fp32: float
    int8: float
    per_class: Dict[str, Tuple[Optional[float], Optional[float]]] = field(default_factory=dict)
    images: int = 0

    @property
    def change(self) -> float:
        """int8 minus fp32, in points (negative: int8 is worse)."""
        return self.int8 - self.fp32

    def class_changes(self) -> List[Tuple[str, float]]:
        """(class, int8 - fp32 in points) for every class with both values, worst first."""
        changes = [(name, b - a) for name, (a, b) in self.per_class.items() if a is not None and b is not None]
        return sorted(changes, key=lambda item: item[1])

    def worst(self, count: int = 3) -> List[Tuple[str, float]]:
        """The ``count`` classes that lost most (only those that lost)."""
        return [(name, change) for name, change in self.class_changes()[:count] if change < 0]

    def table(self) -> str:
        """The per-class table and the overall line, as ``splitattn export --int8`` prints them (classes with no
        value in either model are counted in a last line instead of listed)."""
        width = max([len(self.metric), *(len(name) for name in self.per_class)]) + 2
        lines = [f"{'class':<{width}} {'fp32':>7} {'int8':>7} {'change':>7}"]
        empty = 0
        for name, (fp32, int8) in self.per_class.items():
            if fp32 is None and int8 is None:
                empty += 1
                continue
            delta = None if fp32 is None or int8 is None else int8 - fp32
            lines.append(f"{name:<{width}} {_points(fp32):>7} {_points(int8):>7} {_points(delta, '+'):>7}")
        lines.append(f"{self.metric:<{width}} {_points(self.fp32):>7} {_points(self.int8):>7} {self.change:>+7.2f}")
        if empty:
            lines.append(f"({empty} classes without a value left out: no images or no ground truth in the data scored)")
        return "\n".join(lines)

    def as_metadata(self, **extra: Any) -> Dict[str, Any]:
        """The JSON entry stored under ``int8`` in the int8 file's metadata (``extra``: calibration, toolkit)."""
        return {
            "metric": self.metric,
            "fp32": self.fp32,
            "int8": self.int8,
            "change": self.change,
            "images": self.images,
            "per_class": {name: {"fp32": a, "int8": b} for name, (a, b) in self.per_class.items()},
            **extra,
        }


def check_metric_drop(change: MetricChange, max_drop: float, force: bool = False) -> Optional[str]:
    """Refuse an int8 model whose metric fell by more than ``max_drop`` points.

    Returns:
        None when the drop is within ``max_drop``; the warning text when it is not but ``force`` is set.

    Raises:
        ExportError: the drop exceeds ``max_drop`` and ``force`` is off; the message names the worst classes
            and the ways out (more calibration images, ``--max-metric-drop``, ``--force``).
    """
    if -change.change <= max_drop:
        return None
    worst = ", ".join(f"{name} {delta:+.2f}" for name, delta in change.worst()) or "none singled out"
    message = (
        f"int8 {change.metric} is {change.int8:.2f} against {change.fp32:.2f} in fp32 ({change.change:+.2f} points, "
        f"more than the {max_drop:g} allowed); classes that lost most: {worst}"
    )
    if force:
        return message
    raise ExportError(
        message + ". The int8 file was not written. Calibrate on more images (--calibration-images), allow the "
        "drop (--max-metric-drop POINTS), write it anyway (--force), or serve the fp32 file."
    )
