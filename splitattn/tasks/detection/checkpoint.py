"""The detection checkpoint format and rebuilding a trained detector from it.

A checkpoint (``last.pt``, written every ``--checkpoint-every`` iterations and at the end) is a dict of
tensors and plain values that loads with ``torch.load(..., weights_only=True)``:

- ``model``, ``optimizer``, ``scheduler``, ``scaler``: state dicts (no DDP prefixes);
- ``iter``: optimizer steps completed; ``rng``: one random state per rank;
- ``args``: the run's options (``dataclasses.asdict`` of its ``DetectConfig``); ``classes``: names by label
  (``classes[0]`` is the background); ``task``: ``"detection"``; ``command``: ``"detect train"``;
- ``contiguous_to_coco``: label -> category id of the annotation file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple, Union

from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

from ...config.schemas import DetectConfig
from ...config.values import from_checkpoint_args
from ...engine.checkpoint import load_task_checkpoint
from ..commands import bare_weights_hint, weights_usage
from .model import create_detection_model

TASK, COMMAND = "detection", "detect"  # the checkpoint's ``task`` entry, the command group


def model_from_config(config: DetectConfig, num_classes: int, pretrained: Union[bool, str] = False) -> GeneralizedRCNN:
    """The detector a run's config describes (``arch``, ``backbone``, ``norm``, ``min_size`` ...)."""
    return create_detection_model(
        config.arch,
        config.backbone,
        num_classes,
        norm=config.norm,
        pretrained=pretrained,
        min_size=tuple(config.min_size),
        max_size=config.max_size,
        freeze_stages=config.freeze_stages,
        fpn_norm=config.fpn_norm,
        backbone_kwargs=config.model_kwargs,
        box_head=config.box_head,
        head_norm=config.head_norm,
        **dict(config.detector_kwargs, box_detections_per_img=config.detections_per_img),
    )


def load_detection_model(
    weights: Union[str, Path], action: str = "evaluate"
) -> Tuple[GeneralizedRCNN, List[str], DetectConfig, Dict[int, int]]:
    """``(model in eval mode, class names, the run's config, contiguous_to_coco)`` from a
    ``splitattn detect train`` checkpoint (``action``: the command, for error messages).

    Raises:
        CheckpointError: bare weights, another task's checkpoint, or one without a ``task`` entry.
    """
    usage = weights_usage(action, weights)
    checkpoint = load_task_checkpoint(weights, TASK, COMMAND, usage, bare_weights_hint(action, weights))
    config = from_checkpoint_args(DetectConfig, checkpoint["args"], f"checkpoint {str(weights)!r}")
    classes = list(checkpoint["classes"])
    model = model_from_config(config, len(classes))
    model.load_state_dict(checkpoint["model"])
    mapping = {int(k): int(v) for k, v in checkpoint["contiguous_to_coco"].items()}
    return model.eval(), classes, config, mapping
