"""DeepLabV3 and FCN on a dilated ResNeSt backbone, with an auxiliary FCN head on stage 3.

The heads are torchvision's (``DeepLabHead``: ASPP with an image-pooling branch, then a
3x3 conv; ``FCNHead``: 3x3 conv to in/4 channels, dropout 0.1, 1x1 classifier). The
backbone is ``create_model(..., features_only=True, out_indices=(3, 4))`` with dilation,
so stage 4 keeps 1/8 (or 1/16) of the input resolution as in the paper.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Union

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead

from ...models.registry import create_model
from ...models.resnest import ResNeStFeatures

HEADS = ("deeplabv3", "fcn")
# ASPP atrous rates per output stride: the DeepLabV3 paper's 6/12/18 at 16, doubled at 8.
ASPP_RATES = {8: (12, 24, 36), 16: (6, 12, 18)}
AUX_WEIGHT = 0.2


class SegmentationModel(nn.Module):
    """Backbone -> head on stage 4 (+ auxiliary FCN head on stage 3 while training).

    Shape: (N, 3, H, W) -> ``{"out": (N, K, H, W)}`` logits bilinearly upsampled to the input
    size, plus ``"aux"`` of the same shape in training mode when there is an auxiliary head
    (evaluation skips it: it only serves as deep supervision).
    """

    def __init__(self, backbone: ResNeStFeatures, head: nn.Module, aux_head: Optional[nn.Module] = None) -> None:
        super().__init__()
        if backbone.out_indices != [3, 4]:
            raise ValueError(f"the backbone must return stages 3 and 4 (out_indices=(3, 4)), got {backbone.out_indices}.")
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        size = x.shape[-2:]
        stage3, stage4 = self.backbone(x)
        out = {"out": F.interpolate(self.head(stage4), size=size, mode="bilinear", align_corners=False)}
        if self.aux_head is not None and self.training:
            out["aux"] = F.interpolate(self.aux_head(stage3), size=size, mode="bilinear", align_corners=False)
        return out


def create_segmentation_model(
    backbone: str,
    num_classes: int,
    head: str = "deeplabv3",
    output_stride: int = 8,
    aux: bool = True,
    pretrained: Union[bool, str] = False,
    norm_layer: str = "batchnorm",
    **overrides: Any,
) -> SegmentationModel:
    """A segmentation model on a registered ResNeSt.

    Args:
        backbone: registered model name (``resnest50``, ``resnest14`` ...).
        num_classes: output classes K.
        head: ``deeplabv3`` (ASPP, rates ``ASPP_RATES[output_stride]``) or ``fcn`` (the baseline).
        output_stride: 8 (the paper) or 16 (cheaper); stages past it are dilated.
        aux: add the auxiliary FCN head on stage 3 (its loss is weighted ``AUX_WEIGHT``).
        pretrained: ``True`` for the registered ImageNet weights or a path of any ResNeSt
            classification checkpoint (ours or official); the classifier is dropped.
        norm_layer: the backbone's normalisation (``syncbn``/``frozenbn``/``groupnorm`` ...);
            the heads use BatchNorm (converted to SyncBatchNorm with ``--sync-bn``).
        **overrides: more ``create_model`` arguments (``drop_block_prob`` ...).
    """
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}.")
    if output_stride not in ASPP_RATES:
        raise ValueError(f"output_stride must be 8 or 16 for segmentation, got {output_stride}.")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}.")
    features = create_model(backbone, pretrained=pretrained, features_only=True, out_indices=(3, 4),
                            output_stride=output_stride, norm_layer=norm_layer, **overrides)
    stage3_channels, stage4_channels = features.channels
    if head == "deeplabv3":
        main_head: nn.Module = DeepLabHead(stage4_channels, num_classes, ASPP_RATES[output_stride])
    else:
        main_head = FCNHead(stage4_channels, num_classes)
    aux_head = FCNHead(stage3_channels, num_classes) if aux else None
    model = SegmentationModel(features, main_head, aux_head)
    model.backbone_name = features.model_name
    return model


def segmentation_loss(outputs: Dict[str, Tensor], target: Tensor, ignore_index: int,
                      aux_weight: float = AUX_WEIGHT) -> Tensor:
    """Pixel cross-entropy over non-ignored pixels of ``out`` plus ``aux_weight`` x that of ``aux``.

    ``outputs``: (N, K, H, W) logits; ``target``: (N, H, W) int64 with ``ignore_index`` for void.
    """
    loss = F.cross_entropy(outputs["out"].float(), target, ignore_index=ignore_index)
    if "aux" in outputs:
        loss = loss + aux_weight * F.cross_entropy(outputs["aux"].float(), target, ignore_index=ignore_index)
    return loss
