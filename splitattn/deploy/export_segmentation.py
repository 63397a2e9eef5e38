"""Export of segmentation runs (DeepLabV3, FCN): the network without its auxiliary head, any batch and size.

The file maps ``images`` (N, C, H, W) float32, normalised, to ``logits`` (N, K, H, W) at the input's size (the
eager model's ``out``; the auxiliary FCN head only serves training). Exported by the dynamo exporter by default
(dynamic N, H, W, opset 18; the legacy exporter gives the same operators, faster). What the file does not hold
is stored in its metadata: ``preprocessing`` (mean and std; ``base_size``: the long side an image is resized to
at scale 1, bilinearly as ``torch.nn.functional.interpolate(align_corners=False)``; ``scales``, ``flip`` and
``crop_size``: the evaluation protocol of ``tasks.segmentation.inference.predict_probs``: probabilities
averaged over scales and the mirrored image, windows of ``crop_size`` when the image is larger, resized back
to the image), and ``dataset`` (the layout, for the colours of ``predict``'s pictures).

The export is checked on images of the run's validation split (else its training split; random inputs when
neither can be read) as ``predict_probs`` feeds them at scale 1: one image, then two at 3/4 of that size in one
batch; tolerance 1e-4 relative on the logits, and the share of pixels whose argmax agrees is printed.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config.schemas import SegmentConfig
from ..data.geometry import inference_size
from ..data.io import channel_stats
from ..errors import CheckpointError
from ..tasks.segmentation.checkpoint import TASK, load_segmentation_model
from ..tasks.segmentation.engine import evaluation_dataset
from ..tasks.segmentation.inference import MIN_SIDE
from .export_common import CheckResult, Outputs, TaskExport, common_metadata, compare_relative
from .metadata import PathLike

INPUT_NAME, OUTPUT_NAME = "images", "logits"
TOLERANCE = 1e-4


class SegmentationNetwork(nn.Module):
    """A segmentation model as the file holds it. Shape: (N, C, H, W) normalised -> (N, K, H, W) logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)["out"]


def run_images(
    config: SegmentConfig, classes: Sequence[str], count: int, split: Optional[str] = None, data: Optional[str] = None
) -> Tuple[List[Tensor], str]:
    """Up to ``count`` normalised (C, H, W) images spread over ``split`` of the run's data (``data`` overrides
    it; default: the validation split, else the training split) at the size ``predict_probs`` predicts them at
    scale 1 (long side ``base_size``), and where they came from; empty when no data can be read."""
    for name in [split] if split else [config.val_split, config.train_split]:
        try:
            dataset = evaluation_dataset(config, classes, data, name, skip_bad=True)
        except (OSError, ValueError):  # no such folder, or one that is not the run's data
            continue
        picked = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)
        images = []
        for index in picked:
            image = dataset[int(index)][0][None]
            size = list(inference_size(*image.shape[-2:], 1.0, config.base_size, MIN_SIDE))
            images.append(F.interpolate(image, size=size, mode="bilinear", align_corners=False)[0])
        return images, f"{len(images)} images of {data or config.data} ({name})"
    return [], ""


def compare_logits(expected: List[Outputs], got: List[Outputs]) -> CheckResult:
    """``compare_relative`` on the logits, with the share of pixels whose class (argmax) agrees."""
    result = compare_relative(TOLERANCE)(expected, got)
    same = [(e[0].argmax(1) == g[0].argmax(1)).mean() for e, g in zip(expected, got)]
    agreement = float(min(same))
    result.figures["pixel_agreement"] = agreement
    result.text += f"; pixel classes agree on {100 * agreement:.2f}%"
    return result


def prepare_segmentation(weights: PathLike, ema: bool = False, data: Optional[str] = None) -> TaskExport:
    """The export of a ``segment train`` checkpoint, checked on its run's images (or ``data``'s).

    Raises:
        CheckpointError: ``ema`` (segmentation runs keep no EMA weights), or not a segmentation checkpoint.
    """
    model, classes, config = load_segmentation_model(weights, "export")
    if ema:
        raise CheckpointError(f"{str(weights)!r}: segmentation runs keep no EMA weights; drop --ema.")
    network = SegmentationNetwork(model).eval()
    in_chans = config.in_chans
    shape = ["batch", in_chans, "height", "width"]
    metadata = common_metadata(
        TASK,
        config.model_name,
        classes,
        in_chans,
        INPUT_NAME,
        shape,
        [OUTPUT_NAME],
        MIN_SIDE,
        weights,
        "model",
        dataclasses.asdict(config),
    )
    images, source = run_images(config, classes, 3, data=data)
    if len(images) == 3:
        height, width = images[0].shape[-2:]
        smaller = [max(MIN_SIDE, round(side * 3 / 4)) for side in (height, width)]
        pair = [F.interpolate(image[None], size=smaller, mode="bilinear", align_corners=False) for image in images[1:]]
        inputs = [images[0][None].numpy(), torch.cat(pair).numpy()]
    else:
        generator = torch.Generator().manual_seed(0)
        inputs = [torch.randn(1, in_chans, 96, 128, generator=generator).numpy()]
        inputs.append(torch.randn(2, in_chans, 64, 80, generator=generator).numpy())
        source = "random inputs (no images of the run's data were found)"
    mean, std = channel_stats(in_chans)
    metadata.update(
        preprocessing={
            "mean": list(mean),
            "std": list(std),
            "base_size": config.base_size,
            "scales": [1.0],
            "flip": False,
            "crop_size": config.eval_crop_size,
            "resize": "bilinear, align_corners=False (torch.nn.functional.interpolate); probabilities resized back",
        },
        dataset=config.dataset,
        output_name=OUTPUT_NAME,
    )
    example = torch.from_numpy(inputs[1])  # batch 2: torch.export specialises a size-1 dimension
    return TaskExport(
        task=TASK,
        module=network,
        example=example,
        input_name=INPUT_NAME,
        input_shape=shape,
        output_names=[OUTPUT_NAME],
        metadata=metadata,
        check_inputs=inputs,
        check_source=source,
        compare=compare_logits,
        output_dims={OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"}},
        min_side=MIN_SIDE,
    )
