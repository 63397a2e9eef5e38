"""Run an exported file (ONNX, OpenVINO IR or TorchScript) from the file alone, without torch.

``load_exported(path)`` reads the metadata ``splitattn export`` stored in the file (``deploy.metadata``) and
returns the task's runtime: ``ExportedClassifier`` (class probabilities), ``ExportedDetector`` (boxes, labels,
scores, masks) or ``ExportedSegmenter`` (class probabilities and label maps per pixel). Each prepares a PIL
image as the eager pipeline of its task does, in NumPy and Pillow, with the values stored in the file:

- classification: ``splitattn.data.transforms.eval_transform_for`` of the stored ``eval_config`` (timm's
  resize-and-centre-crop or the authors' crop-then-resize, Pillow's resampling as torchvision's uses it);
- detection: nothing: the file holds torchvision's resizing and normalisation, and takes one RGB image in 0..1;
- segmentation: ``tasks.segmentation.inference.predict_probs`` (normalise, long side to ``base_size x scale``,
  sliding windows, optional flip, softmax, probabilities resized back), with the geometry of
  ``splitattn.data.geometry`` and bilinear resizing as ``torch.nn.functional.interpolate(align_corners=False)``
  computes it.

The tests hold each against the eager model on real images. ONNX files run in ONNX Runtime (or OpenVINO with
``runtime="openvino"``), OpenVINO IR in OpenVINO, TorchScript archives with ``torch.jit.load`` (the one format
that needs torch, imported when such a file is loaded). ``ExportedModel.run`` checks its input as the eager
network does (rank, channels, float values, at least ``min_input_size`` pixels a side), which the raw file
does not: its metadata says so for programs that run it directly.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from ..data.geometry import inference_size, sliding_windows
from ..data.io import ImageReader, with_channels
from ..data.labels import format_predictions
from ..deps import openvino_core, require
from ..errors import UsageError
from ..models.eval_config import EvalConfig
from .metadata import TORCHSCRIPT_METADATA_FILE, PathLike, file_format, read_export_metadata, read_openvino_metadata

__all__ = [
    "RUNTIMES",
    "ExportedClassifier",
    "ExportedDetector",
    "ExportedModel",
    "ExportedSegmenter",
    "eval_config_from_metadata",
    "load_exported",
    "network_call",
    "onnx_session",
    "predict_exported",
]

RUNTIMES = ("onnxruntime", "openvino", "torchscript")
DEFAULT_RUNTIME = {"onnx": "onnxruntime", "openvino": "openvino", "torchscript": "torchscript"}
Call = Callable[[np.ndarray], List[np.ndarray]]


def onnx_session(path: PathLike, threads: Optional[int] = None) -> Any:
    """An ONNX Runtime CPU session for ``path`` (``threads``: intra-op threads, default ONNX Runtime's choice).

    Raises:
        MissingDependencyError: without ``onnxruntime`` (``pip install 'splitattn[export]'``).
    """
    onnxruntime = require("onnxruntime", "export", "running an ONNX file")
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _onnxruntime(path: Path, threads: Optional[int], precision: str) -> Tuple[Dict[str, Any], Call]:
    session = onnx_session(path, threads)
    metadata = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    name = session.get_inputs()[0].name
    return metadata, lambda x: session.run(None, {name: x})


def _openvino(path: Path, threads: Optional[int], precision: str) -> Tuple[Dict[str, Any], Call]:
    require("openvino", "openvino", "running a file in OpenVINO")
    core = openvino_core()
    model = core.read_model(str(path))
    metadata = read_openvino_metadata(model) if file_format(path) == "openvino" else read_export_metadata(path)
    config: Dict[str, Any] = {"INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision]}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    outputs = list(compiled.outputs)

    def call(x: np.ndarray) -> List[np.ndarray]:
        result = request.infer({0: x})
        return [np.array(result[output]) for output in outputs]  # copies: the request reuses its buffers

    return metadata, call


def _torchscript(path: Path, threads: Optional[int], precision: str) -> Tuple[Dict[str, Any], Call]:
    import torch  # the one format that needs it

    extra = {TORCHSCRIPT_METADATA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated; the file is ours
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra).eval()

    def call(x: np.ndarray) -> List[np.ndarray]:
        with torch.no_grad():
            out = module(torch.from_numpy(x))
        return [o.numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]

    return json.loads(extra[TORCHSCRIPT_METADATA_FILE] or "{}"), call


_BACKENDS = {"onnxruntime": _onnxruntime, "openvino": _openvino, "torchscript": _torchscript}


def _open(path: PathLike, threads: Optional[int], runtime: Optional[str], precision: str):
    """``(path, format, runtime, metadata, call)`` of an exported file, its runtime checked against its format."""
    path = Path(path)
    fmt = file_format(path)
    runtime = runtime or DEFAULT_RUNTIME[fmt]
    allowed = {"onnx": ("onnxruntime", "openvino"), "openvino": ("openvino",), "torchscript": ("torchscript",)}
    if runtime not in allowed[fmt]:
        raise UsageError(f"{str(path)!r} is a {fmt} file; it runs in {' or '.join(allowed[fmt])}, not {runtime!r}.")
    if precision not in ("fp32", "bf16") or (precision == "bf16" and runtime != "openvino"):
        raise UsageError(f"precision {precision!r}: fp32 runs everywhere, bf16 in OpenVINO (runtime='openvino').")
    metadata, call = _BACKENDS[runtime](path, threads, precision)
    return path, fmt, runtime, {**metadata, "format": fmt}, call


def _load(path: PathLike, threads: Optional[int], runtime: Optional[str], precision: str):
    """``_open``, refusing a file without splitattn metadata."""
    loaded = _open(path, threads, runtime, precision)
    if "model_name" not in loaded[3]:
        raise UsageError(
            f"{str(path)!r} carries no splitattn export metadata; export it again with `splitattn export`."
        )
    return loaded


def network_call(path: PathLike, threads: Optional[int] = None) -> Call:
    """The raw network of any exported file, with or without splitattn metadata, in its format's own runtime:
    NumPy input in, the list of outputs back; the input is not checked (``ExportedModel.run`` checks it).

    Raises:
        MissingDependencyError: the runtime is not installed.
    """
    return _open(path, threads, None, "fp32")[4]


class ExportedModel:
    """An exported network and its metadata: ``run`` takes NumPy arrays and returns the network's outputs.

    Args:
        path: a file of ``splitattn export`` (format told by content: ONNX, OpenVINO ``.xml``, TorchScript).
        threads: intra-op threads of the runtime (default: the runtime's own choice; TorchScript ignores it).
        runtime: ``onnxruntime`` (ONNX), ``openvino`` (OpenVINO IR, or ONNX read by OpenVINO) or
            ``torchscript``; default: the format's own.
        precision: ``fp32``, or ``bf16`` in OpenVINO (its inference precision hint).

    Attributes: ``metadata`` (dict, see docs/deployment.md), ``task``, ``classes``, ``in_chans``, ``format``,
    ``runtime``, ``min_input_size``.

    Raises:
        FileNotFoundError: no file at ``path``.
        UsageError: a file without splitattn metadata, a runtime or precision the file cannot run in, or a file of
            another task than the class's (``load_exported`` picks the class).
        MissingDependencyError: the runtime is not installed (``pip install 'splitattn[export]'`` or
            ``'splitattn[openvino]'``).
    """

    task: Optional[str] = None  # the subclasses' task; None takes any

    def __init__(
        self, path: PathLike, threads: Optional[int] = None, runtime: Optional[str] = None, precision: str = "fp32"
    ) -> None:
        self._setup(*_load(path, threads, runtime, precision))

    def _setup(self, path: Path, fmt: str, runtime: str, metadata: Dict[str, Any], call: Call) -> None:
        task = metadata.get("task", "classification")  # metadata version 1: classifiers only
        if self.task is not None and task != self.task:
            raise UsageError(f"{str(path)!r} holds a {task} model; load it with load_exported().")
        self.path, self.format, self.runtime, self.metadata, self._call = path, fmt, runtime, metadata, call
        self.classes: List[str] = list(metadata["classes"])
        self.in_chans = int(metadata.get("in_chans", 3))
        self.min_input_size = int(metadata.get("min_input_size", 32))
        self.input_shape = metadata.get("input_shape", ["batch", self.in_chans, "height", "width"])

    def check_input(self, inputs: np.ndarray) -> np.ndarray:
        """``inputs`` as the contiguous float32 array the file takes, or the eager network's error for it.

        Raises:
            TypeError: integer values (images must be converted to float and normalised first).
            UsageError: another rank or channel count than the file's input, or a side under ``min_input_size``.
        """
        array = np.asarray(inputs)
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f"the exported model takes floating-point input, got {array.dtype}; use preprocess().")
        shape = "(" + ", ".join(map(str, self.input_shape)) + ")"
        if array.ndim != len(self.input_shape) or array.shape[-3] != self.in_chans:
            raise UsageError(f"the exported model takes {shape} arrays, got shape {list(array.shape)}.")
        if min(array.shape[-2:]) < self.min_input_size:
            raise UsageError(
                f"Input of {array.shape[-2]}x{array.shape[-1]} pixels is too small for ResNeSt, which downsamples "
                f"by 32; resize images to at least {self.min_input_size}x{self.min_input_size}."
            )
        return np.ascontiguousarray(array, dtype=np.float32)

    def run(self, inputs: np.ndarray) -> List[np.ndarray]:
        """The network's outputs (``metadata["output_names"]`` order) for ``inputs`` (``input_shape``), checked."""
        return self._call(self.check_input(inputs))


def eval_config_from_metadata(fields: Dict[str, Any]) -> EvalConfig:
    """The ``EvalConfig`` an exported classifier stores (``metadata["eval_config"]``; JSON lists back to tuples)."""
    return EvalConfig(**{key: tuple(value) if isinstance(value, list) else value for key, value in fields.items()})


def _normalise(image: Image.Image, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(C, H, W) float32: the image's 8-bit values / 255, minus ``mean``, over ``std`` (per channel)."""
    pixels = np.asarray(image, dtype=np.float32).reshape(image.height, image.width, -1) / 255
    return ((pixels - np.float32(mean)) / np.float32(std)).transpose(2, 0, 1)


def _classification_geometry(image: Image.Image, config: Dict[str, Any]) -> Image.Image:
    """The resize and crop of ``EvalConfig`` on a PIL image, as torchvision's transforms do it with Pillow."""
    size, resample = int(config["input_size"]), Image.Resampling[config["interpolation"].upper()]
    width, height = image.size
    if config["crop_mode"] == "crop_resize":  # the authors': crop crop_pct of the short side, resize it
        crop = config["crop_pct"] * min(height, width)
        top, left = round((height - crop) / 2), round((width - crop) / 2)
        box = (left, top, round(left + crop), round(top + crop))
        return image.crop(box).resize((size, size), resample)
    short = int(size / config["crop_pct"])  # timm's: the short side to size / crop_pct, then a centred crop
    new = (short, int(short * height / width)) if width <= height else (int(short * width / height), short)
    if new != image.size:
        image = image.resize(new, resample)
    left, top = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


class ExportedClassifier(ExportedModel):
    """An exported classifier with its preprocessing; input ``images`` (N, C, H, W) normalised float32 of any
    batch and size, output ``logits`` (N, classes). Adds ``eval_config`` (the stored ``EvalConfig`` fields)."""

    task = "classification"

    def _setup(self, *args: Any) -> None:
        super()._setup(*args)
        self.eval_config: Dict[str, Any] = self.metadata["eval_config"]

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """(1, C, S, S) float32: ``image`` in the file's channel count, resized, cropped and normalised per
        ``eval_config`` (S = its ``input_size``)."""
        image = _classification_geometry(with_channels(image, self.in_chans), self.eval_config)
        return _normalise(image, self.eval_config["mean"], self.eval_config["std"])[None]

    def predict(self, image: Image.Image) -> np.ndarray:
        """Class probabilities (num_classes,) float32 for one PIL image: softmax of the exported logits."""
        return _softmax(self.run(self.preprocess(image))[0], axis=-1)[0]


class ExportedDetector(ExportedModel):
    """An exported detector (torchvision's Faster/Mask/Cascade R-CNN, resizing and normalisation inside):
    input ``image`` (3, H, W) RGB float32 in 0..1 of any size, one image per call; outputs ``boxes`` (N, 4) xyxy
    pixels of the input, ``labels`` (N,) int64 indices into ``classes`` (0 is the background, never returned),
    ``scores`` (N,) highest first, and for mask models ``masks`` (N, 1, H, W) probabilities. The file already
    dropped detections scoring under ``metadata["box_score_thresh"]``."""

    task = "detection"

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """(3, H, W) float32 in 0..1 of an RGB image (as ``splitattn detect predict`` feeds the eager model)."""
        pixels = np.asarray(with_channels(image, 3), dtype=np.float32) / 255
        return pixels.transpose(2, 0, 1)

    def detect(self, image: Image.Image) -> Dict[str, np.ndarray]:
        """Every detection the file returns for one PIL image: ``boxes``, ``labels``, ``scores`` (, ``masks``)."""
        return dict(zip(self.metadata["output_names"], self.run(self.preprocess(image))))

    def predict(self, image: Image.Image, score_threshold: Optional[float] = None) -> Dict[str, np.ndarray]:
        """The detections of ``detect`` scoring at least ``score_threshold`` (default: the stored
        ``score_threshold``, ``splitattn detect predict``'s); masks stay probabilities (threshold
        ``metadata["mask_threshold"]`` to draw them)."""
        threshold = self.metadata["score_threshold"] if score_threshold is None else score_threshold
        found = self.detect(image)
        keep = found["scores"] >= threshold
        return {key: value[keep] for key, value in found.items()}


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    exp = np.exp(x - x.max(axis=axis, keepdims=True))
    return exp / exp.sum(axis=axis, keepdims=True)


def resize_bilinear(array: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """(..., H, W) -> (..., h, w) as ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``
    (no antialiasing): each output pixel centre mapped to ``(i + 0.5) * H / h - 0.5``, clamped at 0, linearly
    interpolated between its two neighbours along each axis."""
    for axis, new in ((-2, int(size[0])), (-1, int(size[1]))):
        old = array.shape[axis]
        if old == new:
            continue
        source = np.maximum((np.arange(new, dtype=np.float32) + 0.5) * np.float32(old / new) - 0.5, 0)
        low = np.minimum(source.astype(np.int64), old - 1)
        high = np.minimum(low + 1, old - 1)
        weight = (source - low).astype(np.float32)
        shape = [1] * array.ndim
        shape[axis] = new
        weight = weight.reshape(shape)
        array = np.take(array, low, axis=axis) * (1 - weight) + np.take(array, high, axis=axis) * weight
    return array


class ExportedSegmenter(ExportedModel):
    """An exported segmentation model: input ``images`` (N, C, H, W) normalised float32 of any batch and size,
    output ``logits`` (N, K, H, W). ``probabilities`` and ``predict`` run the stored evaluation protocol
    (``metadata["preprocessing"]``: ``base_size``, ``scales``, ``flip``, ``crop_size``) on a PIL image."""

    task = "segmentation"

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """(C, H, W) float32: the image in the file's channel count, normalised with the stored mean and std."""
        steps = self.metadata["preprocessing"]
        return _normalise(with_channels(image, self.in_chans), steps["mean"], steps["std"])

    def _window_probs(self, batch: np.ndarray, crop_size: Optional[int], flip: bool) -> np.ndarray:
        """(1, K, h, w) probabilities of a (1, C, h, w) input: one pass or overlapping windows, averaged."""
        height, width = batch.shape[-2:]
        total: Optional[np.ndarray] = None
        counts = np.zeros((1, 1, height, width), np.float32)
        for top, left, win_h, win_w in sliding_windows(height, width, crop_size):
            window = np.ascontiguousarray(batch[..., top : top + win_h, left : left + win_w])
            probs = _softmax(self.run(window)[0], axis=1)
            if flip:
                probs = (probs + _softmax(self.run(window[..., ::-1])[0], axis=1)[..., ::-1]) / 2
            if total is None:
                total = np.zeros((1, probs.shape[1], height, width), np.float32)
            total[..., top : top + win_h, left : left + win_w] += probs
            counts[..., top : top + win_h, left : left + win_w] += 1
        return total / counts

    def probabilities(
        self,
        image: Image.Image,
        scales: Optional[Sequence[float]] = None,
        flip: Optional[bool] = None,
        base_size: Optional[int] = None,
        crop_size: Optional[int] = None,
    ) -> np.ndarray:
        """(K, H, W) float32 class probabilities at the image's own size (each argument defaults to the stored
        protocol's); the NumPy transcription of ``tasks.segmentation.inference.predict_probs``."""
        steps = self.metadata["preprocessing"]
        scales = steps["scales"] if scales is None else scales
        flip = steps["flip"] if flip is None else flip
        base_size = steps["base_size"] if base_size is None else base_size
        crop_size = steps["crop_size"] if crop_size is None else crop_size
        batch = self.preprocess(image)[None]
        height, width = batch.shape[-2:]
        total = np.zeros((len(self.classes), height, width), np.float32)
        for scale in scales:
            size = inference_size(height, width, scale, base_size, self.min_input_size)
            probs = self._window_probs(resize_bilinear(batch, size), crop_size, flip)
            total += resize_bilinear(probs, (height, width))[0]
        return total / len(scales)

    def predict(self, image: Image.Image, **protocol: Any) -> np.ndarray:
        """(H, W) int64 class ids: the argmax of ``probabilities(image, **protocol)``."""
        return self.probabilities(image, **protocol).argmax(0)


TASK_RUNTIMES = {cls.task: cls for cls in (ExportedClassifier, ExportedDetector, ExportedSegmenter)}


def load_exported(
    path: PathLike, threads: Optional[int] = None, runtime: Optional[str] = None, precision: str = "fp32"
) -> Union[ExportedClassifier, ExportedDetector, ExportedSegmenter]:
    """The runtime of the task an exported file holds (arguments and errors as ``ExportedModel``'s)."""
    loaded = _load(path, threads, runtime, precision)
    task = loaded[3].get("task", "classification")
    model = object.__new__(TASK_RUNTIMES[task])
    model._setup(*loaded)
    return model


def predict_exported(path: PathLike, images: Sequence[Union[str, Path]], topk: int = 5) -> int:
    """``splitattn classify predict --exported FILE IMAGE...``: print each image's top-k classes as
    ``splitattn predict`` does for a checkpoint (an unreadable image is reported and skipped). Returns the exit
    code: 0, or 1 when an image could not be read."""
    classifier = ExportedClassifier(path)
    reader = ImageReader([str(path) for path in images], classifier.in_chans)
    for image_path, image in reader:
        probs = classifier.predict(image)
        top = np.argsort(-probs, kind="stable")[: min(topk, len(classifier.classes))]
        print(format_predictions(str(image_path), probs[top].tolist(), top.tolist(), classifier.classes))
    return reader.exit_code
