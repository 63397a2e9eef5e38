"""The detection checkpoint format and rebuilding a trained detector from it.

A checkpoint (``last.pt``, written every ``--checkpoint-every`` iterations and at the end) is a dict of
tensors and plain values that loads with ``torch.load(..., weights_only=True)``:

- ``model``, ``optimizer``, ``scheduler``, ``scaler``: state dicts (no DDP prefixes);
- ``iter``: optimizer steps completed; ``rng``: one random state per rank;
- ``args``: the run's options; ``classes``: names by label (``classes[0]`` is the background);
- ``contiguous_to_coco``: label -> category id of the annotation file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

from ...engine.checkpoint import load_task_checkpoint
from .model import create_detection_model


def model_from_options(
    options: Dict[str, Any], num_classes: int, pretrained: Union[bool, str] = False
) -> GeneralizedRCNN:
    """The detector a run's options describe (``arch``, ``backbone``, ``norm``, ``min_size`` ...)."""
    return create_detection_model(
        options["arch"],
        options["backbone"],
        num_classes,
        norm=options.get("norm", "frozenbn"),
        pretrained=pretrained,
        min_size=tuple(options["min_size"]),
        max_size=int(options["max_size"]),
        trainable_layers=options.get("trainable_layers"),
        fpn_norm=options.get("fpn_norm"),
        backbone_kwargs=options.get("model_kwargs") or {},
        box_head=options.get("box_head", "2fc"),
        head_norm=options.get("head_norm"),
        **dict(
            options.get("detector_kwargs") or {}, box_detections_per_img=int(options.get("detections_per_img", 100))
        ),
    )


def load_detection_model(
    weights: Union[str, Path], action: str = "evaluate"
) -> Tuple[GeneralizedRCNN, List[str], Dict[str, Any], Dict[int, int]]:
    """``(model in eval mode, class names, the run's options, contiguous_to_coco)`` from a
    ``splitattn detect train`` checkpoint."""
    checkpoint, options = load_task_checkpoint(weights, "detection", action)
    classes = list(checkpoint["classes"])
    model = model_from_options(options, len(classes))
    model.load_state_dict(checkpoint["model"])
    mapping = {int(k): int(v) for k, v in dict(checkpoint.get("contiguous_to_coco") or {}).items()}
    return model.eval(), classes, options, mapping
