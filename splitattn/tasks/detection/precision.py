"""Box geometry in float32 under fp16/bf16 autocast, for torchvision's RPN and box predictor.

torchvision's detectors give the anchors the feature maps' dtype (``AnchorGenerator``) and decode box
deltas in the deltas' dtype (``BoxCoder.decode_single`` casts the reference boxes to it). Under autocast
both are fp16/bf16. bfloat16 has 8 significant bits: coordinates in 512..1024 px move in steps of 4 px,
in 1024..2048 px in steps of 8, so neighbouring stride-4 anchors collapse onto one box and every proposal
and detection moves by pixels (an 800x1067 image: anchors up to 7 px off and 4,200 of 217,413 duplicated,
RPN proposals 10 px and detections 4.8 px from a float64 decoding of the same deltas; fp16: up to 1 px).
Under CPU autocast the class softmax of ``postprocess_detections`` also stays in bf16, so scores tie.

The hooks below keep the anchors, the RPN head's and the box predictor's outputs in float32 (float64
stays float64), so decoding, scores and losses are float32 while the convolutions stay in fp16/bf16.
The cascade heads decode in float32 already (``cascade.py``). Hooks rather than subclasses: TorchScript
compiles hooks but not ``super()`` calls, and the modules keep torchvision's classes and parameter names.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import Tensor, nn
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.image_list import ImageList


def _at_least_float32(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _float32_anchors(module: nn.Module, inputs: Tuple[ImageList, List[Tensor]]) -> Tuple[ImageList, List[Tensor]]:
    """Forward pre-hook of ``AnchorGenerator``: it reads only the maps' shape, dtype and device, so it gets
    stand-ins of that shape in at least float32 (a 0-dim tensor expanded: no memory)."""
    images, feature_maps = inputs
    stand_ins = [
        torch.zeros((), dtype=torch.promote_types(f.dtype, torch.float32), device=f.device).expand(f.shape)
        for f in feature_maps
    ]
    return images, stand_ins


def _float32_rpn_outputs(
    module: nn.Module, inputs: Tuple[List[Tensor]], outputs: Tuple[List[Tensor], List[Tensor]]
) -> Tuple[List[Tensor], List[Tensor]]:
    """Forward hook of ``RPNHead``: per-level objectness and box deltas in at least float32."""
    return [_at_least_float32(t) for t in outputs[0]], [_at_least_float32(t) for t in outputs[1]]


def _float32_box_outputs(
    module: nn.Module, inputs: Tuple[Tensor], outputs: Tuple[Tensor, Tensor]
) -> Tuple[Tensor, Tensor]:
    """Forward hook of the box predictor: class logits and box deltas in at least float32."""
    return _at_least_float32(outputs[0]), _at_least_float32(outputs[1])


def keep_box_geometry_in_float32(model: GeneralizedRCNN) -> GeneralizedRCNN:
    """Register the hooks above on ``model.rpn`` and, unless the RoI heads are the cascade's, on
    ``model.roi_heads.box_predictor``; returns ``model`` (whose state dict is unchanged).

    Args:
        model: a torchvision ``FasterRCNN``/``MaskRCNN`` (or one with ``CascadeRoIHeads``).

    Returns:
        The same model, whose anchors, proposals, detections, scores and box losses are computed in
        float32 under fp16/bf16 autocast (tested against torchvision's float32 anchors and a float64
        ``BoxCoder`` decoding in ``tests/test_detection_model.py``).
    """
    model.rpn.anchor_generator.register_forward_pre_hook(_float32_anchors)
    model.rpn.head.register_forward_hook(_float32_rpn_outputs)
    predictor = getattr(model.roi_heads, "box_predictor", None)
    if predictor is not None:
        predictor.register_forward_hook(_float32_box_outputs)
    return model
