"""The segmentation checkpoint format and rebuilding a trained model from it.

A checkpoint (``last.pt`` every epoch, ``best.pt`` when val mIoU improves) is a dict of tensors
and plain values that loads with ``torch.load(..., weights_only=True)``:

- ``model``, ``optimizer``, ``scheduler``, ``scaler``: state dicts (no DDP prefixes);
- ``epoch``, ``step``: epochs and optimizer steps completed; ``rng``: one random state per rank;
- ``args``: the run's options (``dataclasses.asdict`` of its ``SegmentConfig``); ``classes``: class names in
  training-id order; ``task``: ``"segmentation"``; ``command``: ``"segment train"``;
- ``best_miou``: best validation mIoU so far (-1 before any evaluation).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple, Union

from ...config.schemas import SegmentConfig
from ...config.values import from_checkpoint_args
from ...engine.checkpoint import load_task_checkpoint
from ..commands import bare_weights_hint, weights_usage
from .model import SegmentationModel, create_segmentation_model

TASK, COMMAND = "segmentation", "segment"  # the checkpoint's ``task`` entry, the command group


def model_from_config(
    config: SegmentConfig, num_classes: int, pretrained: Union[bool, str] = False
) -> SegmentationModel:
    """The architecture a run's config describes (``backbone``, ``head``, ``output_stride``, ``aux``, ``norm``,
    and the backbone's ``model_kwargs`` such as ``in_chans`` or widths)."""
    return create_segmentation_model(
        config.backbone,
        num_classes,
        head=config.head,
        output_stride=config.output_stride,
        aux=config.aux,
        pretrained=pretrained,
        norm_layer=config.norm,
        freeze_stages=config.freeze_stages,
        **config.model_kwargs,
    )


def load_segmentation_model(
    weights: Union[str, Path], action: str = "evaluate"
) -> Tuple[SegmentationModel, List[str], SegmentConfig]:
    """``(model in eval mode, class names, the run's config)`` from a ``splitattn segment train`` checkpoint
    (``action``: the command, for error messages).

    Raises:
        CheckpointError: bare weights, another task's checkpoint, or one without a ``task`` entry.
    """
    usage = weights_usage(action, weights)
    checkpoint = load_task_checkpoint(weights, TASK, COMMAND, usage, bare_weights_hint(action, weights))
    config = from_checkpoint_args(SegmentConfig, checkpoint["args"], f"checkpoint {str(weights)!r}")
    classes = list(checkpoint["classes"])
    model = model_from_config(config, len(classes))
    model.load_state_dict(checkpoint["model"])
    return model.eval(), classes, config
