"""Exported files where the eager models run: ``evaluate``, ``predict`` and ``evaluate_exported``.

``load_exported_classifier|detector|segmenter`` wrap a runtime (``deploy.runtime``) in a torch module with the
eager model's interface (a classifier's logits, a detector's list of detection dicts, a segmenter's
``{"out": logits}``) and rebuild the run's options from the file's metadata (``run_options``), so the tasks'
own evaluators and drawing code run unchanged on an exported file: ``splitattn detect evaluate --exported FILE``
scores it with the same ``CocoEvaluator`` as ``--weights RUN``, ``segment evaluate`` with the same confusion
matrix and ``predict_probs`` (scales, flip, windows), ``classify evaluate`` with the same loader and top-k.

``evaluate_exported`` is that evaluation as a function: the task's headline metric (top-1, box AP, mIoU) and
its value per class, for a file (fp32 or int8) on the run's validation split or other data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Type, TypeVar

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..config.schemas import ClassifyConfig, DetectConfig, RunConfig, SegmentConfig
from ..config.values import from_checkpoint_args
from ..errors import UsageError
from ..models.eval_config import EvalConfig
from .metadata import PathLike, read_export_metadata
from .runtime import ExportedModel, eval_config_from_metadata, load_exported

__all__ = [
    "ExportedClassifierNetwork",
    "ExportedDetectorNetwork",
    "ExportedNetwork",
    "ExportedSegmenterNetwork",
    "TaskMetrics",
    "evaluate_exported",
    "load_exported_classifier",
    "load_exported_detector",
    "load_exported_segmenter",
]

C = TypeVar("C", bound=RunConfig)
COMMANDS = {"classification": "classify", "detection": "detect", "segmentation": "segment"}


class ExportedNetwork(nn.Module):
    """An exported file's runtime as a parameterless torch module (CPU tensors in and out); the subclasses give
    it the interface of the task's eager model. ``runtime``: the ``deploy.runtime.ExportedModel``."""

    def __init__(self, runtime: ExportedModel) -> None:
        super().__init__()
        self.runtime = runtime

    def _run(self, x: Tensor) -> List[Tensor]:
        return [torch.from_numpy(out) for out in self.runtime.run(x.detach().cpu().float().numpy())]


class ExportedClassifierNetwork(ExportedNetwork):
    """Shape: (N, C, H, W) normalised images -> (N, classes) logits."""

    def forward(self, images: Tensor) -> Tensor:
        return self._run(images)[0]


class ExportedSegmenterNetwork(ExportedNetwork):
    """Shape: (N, C, H, W) normalised images -> ``{"out": (N, K, H, W) logits}`` (the eager model in eval mode)."""

    def forward(self, images: Tensor) -> Dict[str, Tensor]:
        return {"out": self._run(images)[0]}


class ExportedDetectorNetwork(ExportedNetwork):
    """A list of (3, H, W) images in 0..1 -> a list of ``{"boxes", "labels", "scores"(, "masks")}``, one image per
    call of the file (its batch is 1). ``predicts_masks`` tells ``tasks.detection.engine.iou_types``."""

    def __init__(self, runtime: ExportedModel) -> None:
        super().__init__(runtime)
        self.output_names: List[str] = list(runtime.metadata["output_names"])
        self.predicts_masks = "masks" in self.output_names

    def forward(self, images: List[Tensor]) -> List[Dict[str, Tensor]]:
        return [dict(zip(self.output_names, self._run(image))) for image in images]


NETWORKS = {
    "classification": ExportedClassifierNetwork,
    "detection": ExportedDetectorNetwork,
    "segmentation": ExportedSegmenterNetwork,
}


def load_network(path: PathLike, task: str, threads: Optional[int] = None, **runtime: Any) -> ExportedNetwork:
    """The torch module of an exported file of ``task`` (``runtime``: ``ExportedModel``'s ``runtime``/``precision``).

    Raises:
        UsageError: the file holds another task's model (naming the command group that runs it).
    """
    loaded = load_exported(path, threads, **runtime)
    if loaded.task != task:
        raise UsageError(
            f"{str(path)!r} holds a {loaded.task} model; run it with `splitattn {COMMANDS[loaded.task]} ... "
            f"--exported {path}`."
        )
    return NETWORKS[task](loaded)


def run_config(network: ExportedNetwork, cls: Type[C]) -> Optional[C]:
    """The options of the run an exported file was made from (None for bare weights)."""
    options = network.runtime.metadata.get("run_options")
    return None if options is None else from_checkpoint_args(cls, options, f"exported file {network.runtime.path}")


def load_exported_classifier(
    path: PathLike, **runtime: Any
) -> Tuple[ExportedClassifierNetwork, List[str], Optional[ClassifyConfig], EvalConfig]:
    """``(network, class names, the run's options or None, the stored EvalConfig)`` of an exported classifier."""
    network = load_network(path, "classification", **runtime)
    eval_config = eval_config_from_metadata(network.runtime.metadata["eval_config"])
    return network, network.runtime.classes, run_config(network, ClassifyConfig), eval_config


def load_exported_detector(
    path: PathLike, **runtime: Any
) -> Tuple[ExportedDetectorNetwork, List[str], DetectConfig, Dict[int, int]]:
    """``(network, class names, the run's options, contiguous_to_coco)`` as ``load_detection_model`` returns
    them for a checkpoint."""
    network = load_network(path, "detection", **runtime)
    mapping = {int(k): int(v) for k, v in network.runtime.metadata["contiguous_to_coco"].items()}
    return network, network.runtime.classes, run_config(network, DetectConfig), mapping


def load_exported_segmenter(
    path: PathLike, **runtime: Any
) -> Tuple[ExportedSegmenterNetwork, List[str], SegmentConfig]:
    """``(network, class names, the run's options)`` as ``load_segmentation_model`` returns them."""
    network = load_network(path, "segmentation", **runtime)
    return network, network.runtime.classes, run_config(network, SegmentConfig)


@dataclass
class TaskMetrics:
    """The score of a model on a data set, the same for every task.

    ``metric``: ``top1`` (classification), ``bbox AP`` (detection: COCO AP at IoU 0.50:0.95) or ``mIoU``
    (segmentation); ``value``: in percent; ``per_class``: the metric of each class by name (top-1 of its images,
    its box AP, its IoU; None where undefined: no images, no ground truth); ``images``: images scored;
    ``details``: everything the task's evaluator returned (top-5, AP50, mask AP, pixel accuracy ...).
    """

    task: str
    metric: str
    value: float
    per_class: Dict[str, Optional[float]]
    images: int
    details: Dict[str, Any] = field(default_factory=dict)


def _classification_metrics(path: PathLike, data: Optional[PathLike], batch_size: int, workers: int, **runtime):
    from ..data.classification import collate_skip_bad
    from ..data.transforms import eval_transform_for
    from ..tasks.classification.diagnostics import per_class_metrics
    from ..tasks.classification.engine import evaluate, evaluation_dataset

    network, classes, config, eval_config = load_exported_classifier(path, **runtime)
    named = classes if config is not None else None  # bare weights: the data's folders in order
    dataset, _ = evaluation_dataset(
        data, config, eval_transform_for(eval_config), named, network.runtime.in_chans, len(classes)
    )
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_skip_bad)
    result = evaluate(network, loader, torch.device("cpu"), unreadable="error", collect=True)
    predictions = result.pop("predictions")
    rows = per_class_metrics(predictions.labels, predictions.probabilities.argmax(1), classes)
    per_class = {row["name"]: row["recall"] for row in rows}  # each class's top-1: the recall of its images
    return TaskMetrics("classification", "top1", result["top1"], per_class, result["images"], result)


def _detection_metrics(path: PathLike, data, split, max_images, workers: int, **runtime):
    from ..data.detection.dataset import collate_detection
    from ..engine.data import eval_loader
    from ..engine.distributed import DistContext
    from ..tasks.detection.diagnostics import per_category_scores
    from ..tasks.detection.engine import evaluate, evaluation_dataset, iou_types
    from ..tasks.detection.evaluation import CocoEvaluator
    from ..tasks.detection.trainer import limit

    network, classes, config, mapping = load_exported_detector(path, **runtime)
    dataset = evaluation_dataset(config, classes, data, split)
    subset = limit(dataset, max_images if max_images is not None else config.max_images)
    evaluator = CocoEvaluator(dataset.coco, iou_types(network, dataset.coco), mapping)
    device = torch.device("cpu")
    scores = evaluate(
        network,
        eval_loader(subset, 1, DistContext(device=device), workers, collate_detection),
        evaluator,
        device,
        unreadable="error",
    )
    per_kind = {
        kind: {row["name"]: row["AP"] for row in per_category_scores(evaluation)}
        for kind, evaluation in evaluator.evaluations.items()
    }  # empty without any detection (every score 0)
    per_class = per_kind.get("bbox") or {name: 0.0 for name in classes[1:]}
    details = {"scores": scores, "per_class": per_kind}
    return TaskMetrics("detection", "bbox AP", scores["bbox"]["AP"], per_class, len(subset), details)


def _segmentation_metrics(path: PathLike, data, split, workers: int, protocol: Dict[str, Any], **runtime):
    from ..data.segmentation.datasets import collate_eval
    from ..tasks.segmentation.engine import evaluate, evaluation_dataset

    network, classes, config = load_exported_segmenter(path, **runtime)
    dataset = evaluation_dataset(config, classes, data, split)
    plan = {**network.runtime.metadata["preprocessing"], **protocol}
    plan = {key: plan[key] for key in ("scales", "flip", "base_size", "crop_size")}
    loader = DataLoader(dataset, batch_size=1, num_workers=workers, collate_fn=collate_eval)
    result = evaluate(network, loader, len(classes), torch.device("cpu"), classes, **plan)
    result.pop("confusion")
    per_class = {row["name"]: row["iou"] for row in result["per_class"]}
    return TaskMetrics("segmentation", "mIoU", result["miou"], per_class, result["images"], result)


def evaluate_exported(
    path: PathLike,
    data: Optional[PathLike] = None,
    split: Optional[str] = None,
    max_images: Optional[int] = None,
    threads: Optional[int] = None,
    runtime: Optional[str] = None,
    precision: str = "fp32",
    batch_size: int = 32,
    workers: int = 0,
    **protocol: Any,
) -> TaskMetrics:
    """Score an exported file (fp32 or int8; ONNX, OpenVINO or TorchScript) with its task's evaluator.

    Args:
        path: a file of ``splitattn export``.
        data: the data set (default: the run's, from the file's ``run_options``; required for bare weights).
        split: detection and segmentation: the split (default: the run's validation split). Classification
            takes ``data/val`` or ``data/test`` (or ``data`` as the split itself).
        max_images: detection: only the first N images (default: the run's ``--max-images``).
        threads: as ``deploy.runtime.ExportedModel`` takes it.
        runtime: as ``deploy.runtime.ExportedModel`` takes it.
        precision: as ``deploy.runtime.ExportedModel`` takes it.
        batch_size: classification's batch.
        workers: data-loading processes.
        **protocol: segmentation's ``scales``, ``flip``, ``base_size``, ``crop_size`` (default: the stored ones).

    Returns:
        ``TaskMetrics``: the value the eager model's ``evaluate`` prints for the same data (the same evaluator).

    Raises:
        UsageError: an option the file's task does not take, or no data to evaluate on.
        DataError: data whose classes are not the model's.
    """
    task = read_export_metadata(path).get("task", "classification")
    options = dict(threads=threads, runtime=runtime, precision=precision)
    if protocol and task != "segmentation":
        raise UsageError(f"{', '.join(protocol)}: options of segmentation; {path} holds a {task} model.")
    if task == "classification":
        return _classification_metrics(path, data, batch_size, workers, **options)
    if task == "detection":
        return _detection_metrics(path, data, split, max_images, workers, **options)
    return _segmentation_metrics(path, data, split, workers, protocol, **options)
