"""DeepLabV3 and FCN on a dilated ResNeSt backbone, with an auxiliary FCN head on stage 3.

The heads are torchvision's (``DeepLabHead``: ASPP with an image-pooling branch, then a
3x3 conv; ``FCNHead``: 3x3 conv to in/4 channels, dropout 0.1, 1x1 classifier), brought to the
authors' PyTorch-Encoding heads (``encoding/models/sseg/deeplab.py`` and ``fcn.py``, the code behind
the paper's segmentation results): channel dropout (``Dropout2d``) 0.1 before DeepLabV3's classifier
and 0.5 after ASPP's projection, where torchvision has none and element dropout respectively; and the
heads' normalisation follows the backbone's (``head_norm_for``), where torchvision hard-codes
BatchNorm. The FCN head already matches (dropout 0.1, in/4 channels). Remaining differences (README):
the logits are upsampled with ``align_corners=False`` (PyTorch-Encoding: ``True``).

The backbone is ``create_model(..., features_only=True, out_indices=(3, 4))`` with dilation,
so stage 4 keeps 1/8 (or 1/16) of the input resolution as in the paper.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import ASPPPooling, DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead
from torchvision.ops import FrozenBatchNorm2d

from ...config.schemas import SegmentConfig
from ...errors import UsageError
from ...layers.norm import NormFactory, make_norm_layer
from ...models.factory import create_model
from ...models.resnest import ResNeStFeatures
from ...optimize.training import freeze_stages as freeze_backbone_stages

HEADS = ("deeplabv3", "fcn")
BACKBONE_PREFIX = "backbone."  # where the ResNeSt sits in a segmenter's state dict (run checkpoints record it)
# ASPP atrous rates per output stride: the DeepLabV3 paper's 6/12/18 at 16, doubled at 8.
ASPP_RATES = {8: (12, 24, 36), 16: (6, 12, 18)}
AUX_WEIGHT = SegmentConfig.aux_weight  # PyTorch-Encoding's (``--aux-weight``)
# PyTorch-Encoding's DeepLabV3Head: Dropout2d(0.1) before the classifier; ASPP_Module: Dropout2d(0.5) after the projection.
CLASSIFIER_DROPOUT = 0.1
ASPP_DROPOUT = 0.5


def head_norm_for(backbone_norm: Union[str, NormFactory]) -> Union[str, NormFactory]:
    """The heads' default normalisation for a backbone's: the same, except ``frozenbn`` -> ``batchnorm``
    (the heads are newly initialised: there are no statistics to freeze)."""
    return "batchnorm" if make_norm_layer(backbone_norm) is FrozenBatchNorm2d else backbone_norm


def replace_batch_norm(module: nn.Module, norm_layer: NormFactory) -> nn.Module:
    """Replace, in place, every ``nn.BatchNorm2d`` under ``module`` by ``norm_layer(num_features)``; returns ``module``."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, norm_layer(child.num_features))
        else:
            replace_batch_norm(child, norm_layer)
    return module


def deeplabv3_head(
    in_channels: int, num_classes: int, atrous_rates: Sequence[int], norm_layer: NormFactory = nn.BatchNorm2d
) -> DeepLabHead:
    """torchvision's ``DeepLabHead`` as PyTorch-Encoding's ``DeepLabV3Head``: ASPP (1x1, three 3x3 atrous
    and an image-pooling branch, 256 channels each; 1x1 projection, norm, ReLU, ``Dropout2d(0.5)``), 3x3 conv
    256->256, norm, ReLU, ``Dropout2d(0.1)``, 1x1 classifier. Shape: (N, C, h, w) -> (N, K, h, w).

    The classifier is module ``5`` (torchvision's layout has it at ``4``, without the dropout).
    """
    head = DeepLabHead(in_channels, num_classes, list(atrous_rates))
    head[0].project[3] = nn.Dropout2d(ASPP_DROPOUT)  # head[0] is torchvision's ASPP
    head.insert(4, nn.Dropout2d(CLASSIFIER_DROPOUT))
    return replace_batch_norm(head, norm_layer)


class SegmentationModel(nn.Module):
    """Backbone -> head on stage 4 (+ auxiliary FCN head on stage 3 while training).

    Shape: (N, 3, H, W) -> ``{"out": (N, K, H, W)}`` logits bilinearly upsampled to the input
    size, plus ``"aux"`` of the same shape in training mode when there is an auxiliary head
    (evaluation skips it: it only serves as deep supervision).
    """

    def __init__(self, backbone: ResNeStFeatures, head: nn.Module, aux_head: Optional[nn.Module] = None) -> None:
        super().__init__()
        if backbone.out_indices != [3, 4]:
            raise UsageError(
                f"the backbone must return stages 3 and 4 (out_indices=(3, 4)), got {backbone.out_indices}."
            )
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        if self.training and x.shape[0] < 2 and not torch.jit.is_scripting():
            self.check_single_image_batch()
        size = x.shape[-2:]
        stage3, stage4 = self.backbone(x)
        out = {"out": F.interpolate(self.head(stage4), size=size, mode="bilinear", align_corners=False)}
        if self.aux_head is not None and self.training:
            out["aux"] = F.interpolate(self.aux_head(stage3), size=size, mode="bilinear", align_corners=False)
        return out

    @torch.jit.unused
    def check_single_image_batch(self) -> None:
        """Raise a clear ValueError (instead of torch's "Expected more than 1 value per channel") when a
        batch of one image would reach BatchNorm in ASPP's image-pooling branch, which sees one value per
        channel and image; SyncBatchNorm across several processes pools the batch and passes."""
        distributed = (
            torch.distributed.is_available()
            and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1
        )
        for pooling in (m for m in self.head.modules() if isinstance(m, ASPPPooling)):
            for norm in pooling.modules():
                if isinstance(norm, nn.BatchNorm2d) or (isinstance(norm, nn.SyncBatchNorm) and not distributed):
                    raise UsageError(
                        "training on a batch of 1 image: the BatchNorm of DeepLabV3's image-pooling branch sees one "
                        "value per channel. Use batches of >= 2 images, head_norm='groupnorm' (the default with "
                        "norm_layer='groupnorm'), or SyncBatchNorm across several processes."
                    )


def create_segmentation_model(
    backbone: str,
    num_classes: int,
    head: str = SegmentConfig.head,
    output_stride: int = SegmentConfig.output_stride,
    aux: bool = SegmentConfig.aux,
    pretrained: Union[bool, str] = False,
    norm_layer: Union[str, NormFactory] = SegmentConfig.norm,
    head_norm: Optional[Union[str, NormFactory]] = None,
    freeze_stages: Optional[int] = SegmentConfig.freeze_stages,
    **overrides: Any,
) -> SegmentationModel:
    """A segmentation model on a registered ResNeSt.

    The defaults are those of ``segment train`` (``config.schemas.SegmentConfig``).

    Args:
        backbone: registered model name (``resnest50``, ``resnest14`` ...).
        num_classes: output classes K.
        head: ``deeplabv3`` (ASPP, rates ``ASPP_RATES[output_stride]``) or ``fcn`` (the baseline).
        output_stride: 8 (the paper) or 16 (cheaper); stages past it are dilated.
        aux: add the auxiliary FCN head on stage 3 (its loss is weighted ``AUX_WEIGHT``).
        pretrained: ``True`` for the registered ImageNet weights or a path of any ResNeSt
            classification checkpoint (ours or official); the classifier is dropped.
        norm_layer: the backbone's normalisation (``syncbn``/``frozenbn``/``groupnorm`` ...).
        head_norm: the heads' normalisation; by default the backbone's (``head_norm_for``: GroupNorm
            heads on a GroupNorm backbone, so a batch of 1 trains; BatchNorm for ``frozenbn``). Checkpoints
            of GroupNorm-backbone models written before heads followed the backbone need ``"batchnorm"``.
        freeze_stages: freeze the stem and the first K stages of the backbone (0-4;
            ``optimize.training.freeze_stages``: parameters fixed, BatchNorm frozen); None: nothing frozen.
        **overrides: more ``create_model`` arguments (``drop_block_prob`` ...).

    In training mode, a batch of 1 image with BatchNorm heads raises ValueError (see
    ``SegmentationModel.check_single_image_batch``).
    """
    if head not in HEADS:
        raise UsageError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}.")
    if output_stride not in ASPP_RATES:
        raise UsageError(f"output_stride must be 8 or 16 for segmentation, got {output_stride}.")
    if num_classes < 1:
        raise UsageError(f"num_classes must be positive, got {num_classes}.")
    features = create_model(
        backbone,
        pretrained=pretrained,
        features_only=True,
        out_indices=(3, 4),
        output_stride=output_stride,
        norm_layer=norm_layer,
        **overrides,
    )
    if freeze_stages is not None:
        freeze_backbone_stages(features, freeze_stages)
    stage3_channels, stage4_channels = features.channels
    heads_norm = make_norm_layer(head_norm or head_norm_for(norm_layer))
    if heads_norm is FrozenBatchNorm2d:
        raise UsageError(
            f"head_norm={head_norm!r}: the heads are newly initialised, so frozen BatchNorm would freeze "
            f"nothing; use batchnorm, syncbn, groupnorm, or None (follow the backbone)."
        )
    if head == "deeplabv3":
        main_head: nn.Module = deeplabv3_head(stage4_channels, num_classes, ASPP_RATES[output_stride], heads_norm)
    else:
        main_head = replace_batch_norm(FCNHead(stage4_channels, num_classes), heads_norm)
    aux_head = replace_batch_norm(FCNHead(stage3_channels, num_classes), heads_norm) if aux else None
    model = SegmentationModel(features, main_head, aux_head)
    model.backbone_name = features.model_name
    return model


def segmentation_loss(
    outputs: Dict[str, Tensor],
    target: Tensor,
    ignore_index: int,
    aux_weight: float = AUX_WEIGHT,
    class_weights: Optional[Tensor] = None,
) -> Tensor:
    """Pixel cross-entropy over non-ignored pixels of ``out`` plus ``aux_weight`` x that of ``aux``.

    ``outputs``: (N, K, H, W) logits; ``target``: (N, H, W) int64 with ``ignore_index`` for void;
    ``class_weights``: (K,) weight of each class's pixels (``F.cross_entropy``'s ``weight``: the mean is over
    the weights of the non-ignored pixels).
    """
    weight = class_weights.to(outputs["out"].device) if class_weights is not None else None
    loss = F.cross_entropy(outputs["out"].float(), target, weight=weight, ignore_index=ignore_index)
    if "aux" in outputs:
        aux = F.cross_entropy(outputs["aux"].float(), target, weight=weight, ignore_index=ignore_index)
        loss = loss + aux_weight * aux
    return loss
