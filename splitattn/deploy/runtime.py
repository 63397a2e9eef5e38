"""Run an exported classifier (ONNX or TorchScript) from the file alone.

``ExportedClassifier`` reads the metadata ``splitattn export`` stored in the file
(``read_export_metadata``) and preprocesses an image with the same transform that
``splitattn predict`` builds for the checkpoint (``splitattn.data.eval_transform_for`` of the
stored ``EvalConfig``), so the exported file and the checkpoint give the same probabilities.
ONNX files run in ONNX Runtime (CPU), TorchScript files with ``torch.jit.load``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from ..data.io import CHANNEL_MODES, ImageReader, to_8bit
from ..data.labels import format_predictions
from ..data.transforms import eval_transform_for
from ..models.eval_config import EvalConfig
from .export import PathLike, load_torchscript, onnx_session, read_export_metadata

__all__ = ["ExportedClassifier", "predict_exported"]


def eval_config_from_metadata(fields: dict) -> EvalConfig:
    """The ``EvalConfig`` stored by ``export_metadata`` (JSON lists back to tuples)."""
    return EvalConfig(**{key: tuple(value) if isinstance(value, list) else value for key, value in fields.items()})


class ExportedClassifier:
    """An exported ONNX or TorchScript classifier with its preprocessing, built from the file's metadata only.

    Attributes: ``metadata`` (dict, see ``export_metadata``), ``classes`` (names in label order),
    ``in_chans``, ``eval_config``, ``format`` (``"onnx"`` or ``"torchscript"``).
    Raises ``FileNotFoundError`` / ``UsageError`` for a missing file or one without metadata, and
    ``MissingDependencyError`` for an ONNX file without onnx/onnxruntime installed.
    """

    def __init__(self, path: PathLike, threads: Optional[int] = None) -> None:
        self.path = Path(path)
        self.metadata = read_export_metadata(self.path)
        self.classes: List[str] = list(self.metadata["classes"])
        self.in_chans = int(self.metadata["in_chans"])
        self.eval_config = eval_config_from_metadata(self.metadata["eval_config"])
        self.format = self.metadata["format"]
        config = self.eval_config
        self.transform = eval_transform_for(config)
        self._logits = self._onnx_runner(threads) if self.format == "onnx" else self._torchscript_runner()

    def _onnx_runner(self, threads: Optional[int]) -> Callable[[np.ndarray], np.ndarray]:
        session = onnx_session(self.path, threads)
        name = self.metadata["input_name"]
        return lambda batch: session.run(None, {name: batch})[0]

    def _torchscript_runner(self) -> Callable[[np.ndarray], np.ndarray]:
        module = load_torchscript(self.path)

        def run(batch: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(batch)).numpy()

        return run

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """(1, C, S, S) float32: ``image`` in the file's channel count, resized/cropped/normalised per its
        ``eval_config`` (S = ``input_size``)."""
        image = to_8bit(image)
        mode = CHANNEL_MODES[self.in_chans]
        if image.mode != mode:
            image = image.convert(mode)
        return self.transform(image)[None].numpy()

    def predict(self, image: Image.Image) -> np.ndarray:
        """Class probabilities (num_classes,) float32 for one PIL image: softmax of the exported logits."""
        logits = self._logits(self.preprocess(image))
        return torch.from_numpy(logits).softmax(-1)[0].numpy()


def predict_exported(path: PathLike, images: Sequence[Union[str, Path]], topk: int = 5) -> int:
    """``splitattn predict --onnx FILE IMAGE...``: print each image's top-k classes as ``splitattn predict``
    does for a checkpoint (an unreadable image is reported and skipped). Returns 0."""
    classifier = ExportedClassifier(path)
    reader = ImageReader([str(path) for path in images], classifier.in_chans)
    for image_path, image in reader:
        probs = torch.from_numpy(classifier.predict(image))
        top = probs.topk(min(topk, len(classifier.classes)))
        print(format_predictions(str(image_path), top.values.tolist(), top.indices.tolist(), classifier.classes))
    return reader.exit_code
