"""The segmentation checkpoint format and rebuilding a trained model from it.

A checkpoint (``last.pt`` every epoch, ``best.pt`` when val mIoU improves) is a dict of tensors
and plain values that loads with ``torch.load(..., weights_only=True)``:

- ``model``, ``optimizer``, ``scheduler``, ``scaler``: state dicts (no DDP prefixes);
- ``epoch``, ``step``: epochs and optimizer steps completed; ``rng``: one random state per rank;
- ``args``: the run's options; ``classes``: class names in training-id order;
- ``best_miou``: best validation mIoU so far (-1 before any evaluation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

from ...engine.checkpoint import load_task_checkpoint
from .model import SegmentationModel, create_segmentation_model


def model_from_options(
    options: Dict[str, Any], num_classes: int, pretrained: Union[bool, str] = False
) -> SegmentationModel:
    """The architecture a run's options describe (``backbone``, ``head``, ``output_stride``, ``aux``, ``norm``,
    and the backbone's ``model_kwargs`` such as ``in_chans`` or widths)."""
    norm = options.get("norm", "batchnorm")
    return create_segmentation_model(
        options["backbone"],
        num_classes,
        head=options.get("head", "deeplabv3"),
        output_stride=int(options.get("output_stride", 8)),
        aux=bool(options.get("aux", True)),
        pretrained=pretrained,
        norm_layer=norm,
        **(options.get("model_kwargs") or {}),
    )


def load_segmentation_model(
    weights: Union[str, Path], action: str = "evaluate"
) -> Tuple[SegmentationModel, List[str], Dict[str, Any]]:
    """``(model in eval mode, class names, the run's options)`` from a ``splitattn segment train`` checkpoint."""
    checkpoint, options = load_task_checkpoint(weights, "segmentation", action)
    classes = list(checkpoint["classes"])
    model = model_from_options(options, len(classes))
    model.load_state_dict(checkpoint["model"])
    return model.eval(), classes, options
