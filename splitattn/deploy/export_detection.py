"""Export of detection runs (Faster, Mask, Cascade R-CNN): one image in, its detections out, preprocessing inside.

The file maps ``image`` (3, H, W) RGB float32 in 0..1, any height and width, to ``boxes`` (N, 4) xyxy pixels of
the input, ``labels`` (N,) int64, ``scores`` (N,) and, for mask models, ``masks`` (N, 1, H, W) probabilities:
torchvision's whole detector in evaluation mode, with its resizing (short side to ``min_size``, long side at
most ``max_size``) and normalisation, the RPN, the RoI heads, NMS and the mapping back to the input's pixels.
Batch 1 is the limit of that interface (torchvision's detectors take a list of images of different sizes);
the height and width are dynamic. ONNX goes through the legacy exporter only (``formats``: torch.export
cannot capture ``batched_nms``), at opset 18 by default (17 when asked); TorchScript is scripted
(``torch.jit.script``: the detectors' control flow depends on the data, which tracing would freeze).

The metadata adds what a program needs around the graph: ``score_threshold`` (what ``detect predict``
draws, 0.5), ``box_score_thresh`` (what the graph already dropped), ``mask_threshold``,
``detections_per_img``, ``contiguous_to_coco`` (label -> COCO category id, for COCO results) and
``preprocessing`` (informative: it is in the graph).

The check runs two images of the run's validation split (else its training split; a random image when neither
can be read) and matches the file's detections with the eager model's (same label, best IoU): boxes within
0.1 px, scores within 1e-3, masks agreeing on 99.9% of the pixels at ``mask_threshold``, and no detection left
unmatched unless its score is within 1e-3 of where the graph cuts (its threshold, or the per-image cap).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..config.schemas import DETECTION_SCORE_THRESHOLD, DetectConfig
from ..errors import CheckpointError
from ..tasks.detection.checkpoint import TASK, load_detection_model
from ..tasks.detection.engine import evaluation_dataset
from ..tasks.detection.inference import MASK_THRESHOLD
from .export_common import CheckResult, Outputs, TaskExport, common_metadata
from .metadata import PathLike

INPUT_NAME = "image"
BOX_TOLERANCE = 0.1  # pixels
SCORE_TOLERANCE = 1e-3
MASK_AGREEMENT = 0.999


class DetectionNetwork(nn.Module):
    """A torchvision detector as the file holds it: one (3, H, W) image in 0..1 -> ``[boxes, labels, scores(,
    masks)]`` (the ``output_names`` entries of its detections)."""

    def __init__(self, model: nn.Module, output_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.output_names: List[str] = list(output_names)
        self.score_thresh = float(model.roi_heads.score_thresh)

    def forward(self, image: Tensor) -> List[Tensor]:
        out = self.model([image])
        if torch.jit.is_scripting():  # scripted torchvision detectors return (losses, detections)
            out = out[1]
        detections = out[0]
        # What eager returns anyway; in the graph it removes the one row (label 0, the background, score near 0)
        # that the exported box selection yields in OpenVINO when no box passes (an empty-tensor Gather).
        keep = (detections["labels"] > 0) & (detections["scores"] > self.score_thresh)
        return [detections[name][keep] for name in self.output_names]


def run_images(
    config: DetectConfig, classes: Sequence[str], count: int, split: Optional[str] = None, data: Optional[str] = None
) -> Tuple[List[Tensor], str]:
    """Up to ``count`` readable (3, H, W) images in 0..1 spread over ``split`` of the run's data (``data``
    overrides it; default: the validation split, else the training split), and where they came from; empty when
    no data can be read."""
    for name in [split] if split else [config.val_split, config.train_split]:
        try:
            dataset = evaluation_dataset(config, classes, data, name)
        except (OSError, ValueError):  # no such folder or split, or not the run's classes
            continue
        images = []
        for index in np.linspace(0, len(dataset) - 1, min(len(dataset), 4 * count)).round().astype(int):
            sample = dataset[int(index)]
            if sample is not None:
                images.append(sample[0].as_subclass(Tensor))
            if len(images) == count:
                break
        return images, f"{len(images)} images of {data or config.data} ({name})"
    return [], ""


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each of (N, 4) boxes."""
    low, high = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=1)
    area = lambda b: np.prod(b[..., 2:] - b[..., :2], axis=-1)  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-9)


def match(expected: Outputs, got: Outputs) -> List[Tuple[int, int]]:
    """Pairs (eager index, file index): each eager detection, highest score first, with the unmatched file
    detection of its label that overlaps it most (IoU > 0.5)."""
    pairs, free = [], np.ones(len(got[2]), bool)
    for i in np.argsort(-expected[2], kind="stable"):
        candidates = np.flatnonzero(free & (got[1] == expected[1][i]))
        if len(candidates):
            overlaps = _iou(expected[0][i], got[0][candidates])
            if overlaps.max() > 0.5:
                j = int(candidates[overlaps.argmax()])
                pairs.append((int(i), j))
                free[j] = False
    return pairs


def compare_detections(box_score_thresh: float, cap: int) -> Callable[[List[Outputs], List[Outputs]], CheckResult]:
    """The check of a detector's outputs (see the module docstring)."""

    def compare(expected: List[Outputs], got: List[Outputs]) -> CheckResult:
        box = score = lost = 0.0
        agreement = 1.0
        for e, g in zip(expected, got):
            pairs = match(e, g)
            for i, j in pairs:
                box = max(box, float(np.abs(e[0][i] - g[0][j]).max()))
                score = max(score, float(abs(e[2][i] - g[2][j])))
                if len(e) > 3:
                    agreement = min(agreement, float(((e[3][i] > MASK_THRESHOLD) == (g[3][j] > MASK_THRESHOLD)).mean()))
            for side, found in ((e, {i for i, _ in pairs}), (g, {j for _, j in pairs})):
                edge = box_score_thresh if len(side[2]) < cap else float(side[2].min())
                left = [k for k in range(len(side[2])) if k not in found]
                lost += sum(1 for k in left if side[2][k] > edge + SCORE_TOLERANCE)
        passed = not lost and box <= BOX_TOLERANCE and score <= SCORE_TOLERANCE and agreement >= MASK_AGREEMENT
        text = (
            f"max box difference {box:.2e} px (tolerance {BOX_TOLERANCE}), max score difference {score:.1e} "
            f"(tolerance {SCORE_TOLERANCE:.0e}), {int(lost)} detections without a counterpart"
        )
        if len(expected[0]) > 3:
            text += f", masks agree on {100 * agreement:.2f}% of the pixels (at least {100 * MASK_AGREEMENT:.1f}%)"
        figures = {"max_box_px": box, "max_score_diff": score, "unmatched": lost, "mask_agreement": agreement}
        return CheckResult(box, BOX_TOLERANCE, passed, text, figures)

    return compare


def prepare_detection(weights: PathLike, ema: bool = False, data: Optional[str] = None) -> TaskExport:
    """The export of a ``detect train`` checkpoint, checked on its run's images (or ``data``'s).

    Raises:
        CheckpointError: ``ema`` (detection runs keep no EMA weights), or not a detection checkpoint.
    """
    model, classes, config, mapping = load_detection_model(weights, "export")
    if ema:
        raise CheckpointError(f"{str(weights)!r}: detection runs keep no EMA weights; drop --ema.")
    names = ["boxes", "labels", "scores"] + (["masks"] if "mask" in config.arch else [])
    network = DetectionNetwork(model, names).eval()
    shape = [3, "height", "width"]
    metadata = common_metadata(
        TASK, config.model_name, classes, 3, INPUT_NAME, shape, names, 1, weights, "model", dataclasses.asdict(config)
    )
    transform, heads = model.transform, model.roi_heads
    metadata.update(
        arch=config.arch,
        preprocessing={
            "in_graph": True,
            "input": "one RGB image (3, H, W) float32 in 0..1",
            "min_size": int(transform.min_size[-1]),
            "max_size": int(transform.max_size),
            "mean": list(transform.image_mean),
            "std": list(transform.image_std),
        },
        score_threshold=DETECTION_SCORE_THRESHOLD,
        box_score_thresh=float(heads.score_thresh),
        nms_thresh=float(heads.nms_thresh),
        detections_per_img=int(heads.detections_per_img),
        mask_threshold=MASK_THRESHOLD,
        contiguous_to_coco={str(k): v for k, v in mapping.items()},
    )
    images, source = run_images(config, classes, 2, data=data)
    if len(images) < 2:
        generator = torch.Generator().manual_seed(0)
        images = [torch.rand(3, 240, 320, generator=generator), torch.rand(3, 300, 200, generator=generator)]
        source = "random images (no images of the run's data were found)"
    dims: Dict[str, Dict[int, str]] = {name: {0: "detections"} for name in names}
    if "masks" in names:
        dims["masks"] = {0: "detections", 2: "height", 3: "width"}
    return TaskExport(
        task=TASK,
        module=network,
        example=images[0],
        input_name=INPUT_NAME,
        input_shape=shape,
        output_names=names,
        metadata=metadata,
        check_inputs=[image.numpy() for image in images],
        check_source=source,
        compare=compare_detections(float(heads.score_thresh), int(heads.detections_per_img)),
        output_dims=dims,
        legacy_only=True,
        torchscript="script",
    )
