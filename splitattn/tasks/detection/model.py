"""Faster / Mask / Cascade (Mask) R-CNN on a ResNeSt + FPN backbone, built from torchvision parts.

The backbone is ``create_model(name, features_only=True, out_indices=(1, 2, 3, 4))`` (strides
4-32) under torchvision's ``FeaturePyramidNetwork`` with a max-pooled extra level: five 256-channel
maps at strides 4, 8, 16, 32 and 64 named ``"0"``..``"3"``, ``"pool"``, the layout torchvision's
detectors expect. The detectors are torchvision's ``FasterRCNN`` and ``MaskRCNN``; the cascade
variants replace their ``roi_heads`` with ``CascadeRoIHeads`` (``cascade.py``).

Box heads (``box_head=``, ``BOX_HEADS``), both ending in 1024 features for the box predictor:

- ``2fc`` (default, torchvision's ``TwoMLPHead``): flatten the 256x7x7 RoI features, two fc layers of 1024;
- ``4conv1fc`` (the paper's: detectron2-ResNeSt's ``FastRCNNConvFCHead`` with ``NUM_CONV: 4``,
  ``NUM_FC: 1``, ``NORM: SyncBN``; mmdetection's ``Shared4Conv1FCBBoxHead``): four 3x3 convs 256->256,
  each followed by ``head_norm`` (none: conv with bias) and ReLU, then one fc 256*7*7->1024 with ReLU,
  built with torchvision's ``FastRCNNConvFCHead``.

``head_norm`` also normalises the mask head's four 3x3 convs (detectron2-ResNeSt's ``ROI_MASK_HEAD.NORM``),
``fpn_norm`` the FPN's lateral and output convs (``FPN.NORM``). The authors' configs set all three to SyncBN.
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from typing import Any, Callable, Dict, Optional, Sequence, Union

from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ...config.schemas import DetectConfig, field_default
from ...errors import UsageError
from ...layers.norm import BATCH_STATISTICS_NORMS, make_norm_layer
from ...models.factory import create_model
from ...models.resnest import ResNeStFeatures
from ...optimize.training import freeze_stages as freeze_backbone_stages
from .cascade import CASCADE_IOUS, CASCADE_REG_WEIGHTS, CascadeRoIHeads
from .precision import keep_box_geometry_in_float32

ARCHS = ("faster_rcnn", "mask_rcnn", "cascade_rcnn", "cascade_mask_rcnn")
BACKBONE_PREFIX = "backbone.body."  # where the ResNeSt sits in a detector's state dict (run checkpoints record it)
FPN_CHANNELS = 256
BOX_HEADS = ("2fc", "4conv1fc")
ROI_SIZE = 7  # box RoIAlign output (FasterRCNN's default MultiScaleRoIAlign)
REPRESENTATION_SIZE = 1024  # box-head output features, FasterRCNN's box predictor input
# Stages frozen by default with frozen BatchNorm: the stem and layer1 (torchvision's trainable_layers=3,
# detectron2's FREEZE_AT=2).
FROZENBN_FROZEN_STAGES = 1
# The paper's multi-scale training: short side sampled from 640..800 in steps of 32; tested at 800 (``--min-size``).
TRAIN_MIN_SIZES = tuple(field_default(DetectConfig, "min_size"))


class ResNeStFPN(nn.Module):
    """ResNeSt stages 1-4 -> FPN (+ max-pooled P6), the backbone torchvision's detectors take.

    Shape: (N, 3, H, W) -> OrderedDict ``"0"``..``"3"``, ``"pool"`` of (N, 256, H / s, W / s) for
    strides s = 4, 8, 16, 32, 64 (rounded up). ``out_channels`` is 256, as ``FasterRCNN`` requires.
    """

    def __init__(self, body: ResNeStFeatures, out_channels: int = FPN_CHANNELS, fpn_norm: Optional[str] = None) -> None:
        super().__init__()
        if body.out_indices != [1, 2, 3, 4]:
            raise UsageError(f"the FPN needs stages 1-4 (out_indices=(1, 2, 3, 4)), got {body.out_indices}.")
        self.body = body
        self.fpn = FeaturePyramidNetwork(
            body.channels,
            out_channels,
            extra_blocks=LastLevelMaxPool(),
            norm_layer=trainable_norm(fpn_norm, "fpn_norm"),
        )
        self.out_channels = out_channels
        self.strides = [*body.reductions, body.reductions[-1] * 2]

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        features = self.body(x)
        return self.fpn(OrderedDict((str(index), feature) for index, feature in enumerate(features)))


def trainable_norm(norm: Optional[str], option: str) -> Optional[Callable[[int], nn.Module]]:
    """The norm factory of a newly initialised part (FPN, heads), ``None`` for plain convs with bias.

    Raises ValueError for ``frozenbn``: a new layer has no pretrained statistics to freeze.
    """
    if norm is None:
        return None
    factory = make_norm_layer(norm)
    if factory is FrozenBatchNorm2d:
        raise UsageError(
            f"{option}={norm!r}: the FPN and the heads are newly initialised, so frozen BatchNorm would "
            f"freeze nothing; use syncbn (the paper), batchnorm, groupnorm, or None."
        )
    return factory


def make_box_head_factory(
    box_head: str, norm_layer: Optional[Callable[[int], nn.Module]] = None
) -> Callable[[], nn.Module]:
    """A function returning a new box head (``BOX_HEADS``; see the module docstring), one per call.

    Shape of a head: (n, 256, 7, 7) pooled RoI features -> (n, 1024). ``norm_layer`` follows each conv
    of ``4conv1fc`` (``None``: convs with bias). Raises ValueError for an unknown ``box_head``.
    """
    if box_head not in BOX_HEADS:
        raise UsageError(f"unknown box_head {box_head!r}; choose one of {', '.join(BOX_HEADS)}.")
    if box_head == "2fc":
        return lambda: TwoMLPHead(FPN_CHANNELS * ROI_SIZE * ROI_SIZE, REPRESENTATION_SIZE)
    return lambda: FastRCNNConvFCHead(
        (FPN_CHANNELS, ROI_SIZE, ROI_SIZE), [FPN_CHANNELS] * 4, [REPRESENTATION_SIZE], norm_layer=norm_layer
    )


def resnest_fpn_backbone(
    backbone: str,
    norm: str = DetectConfig.norm,
    pretrained: Union[bool, str] = False,
    freeze_stages: Optional[int] = DetectConfig.freeze_stages,
    fpn_norm: Optional[str] = DetectConfig.fpn_norm,
    **overrides: Any,
) -> ResNeStFPN:
    """A registered ResNeSt (any ``list_models()`` name) as an FPN detection backbone.

    The defaults are those of ``detect train`` (``config.schemas.DetectConfig``).

    Args:
        backbone: model name (``resnest50``, ``resnest50_fast_2s2x40d`` ...).
        norm: the backbone's normalisation: ``groupnorm`` (default: trains from scratch at any batch size),
            ``syncbn`` (the paper), ``frozenbn`` (pretrained weights, statistics frozen) or ``batchnorm``.
        pretrained: ``True`` (registered ImageNet weights), or a path/URL of any ResNeSt
            classification checkpoint, ours (``splitattn train``'s ``last.pt``) or official.
        freeze_stages: freeze the stem and the first ``freeze_stages`` stages (0-4; ``optimize.training.freeze_stages``:
            parameters fixed, BatchNorm frozen); default (None) 1 with frozen BN (torchvision's
            ``trainable_layers=3``, detectron2's ``FREEZE_AT=2``), nothing otherwise (the paper trains all with
            SyncBN).
        fpn_norm: normalisation inside the FPN (``None``: plain convs with bias, as torchvision;
            ``syncbn`` in the paper). ``frozenbn`` raises ValueError (nothing pretrained to freeze).
        **overrides: more ``create_model`` arguments (``bottleneck_width`` ...).
    """
    if pretrained is True and norm not in BATCH_STATISTICS_NORMS:  # before anything is built or downloaded
        raise UsageError(
            f"pretrained=True loads ImageNet weights trained with BatchNorm, whose statistics a norm={norm!r} "
            "backbone cannot take: pass norm='frozenbn' (the usual choice for fine-tuning a detector) or "
            "'batchnorm'/'syncbn', or pretrained=False to train from scratch."
        )
    body = create_model(
        backbone, pretrained=pretrained, features_only=True, out_indices=(1, 2, 3, 4), norm_layer=norm, **overrides
    )
    if freeze_stages is None and norm == "frozenbn":
        freeze_stages = FROZENBN_FROZEN_STAGES
    if freeze_stages is not None:
        freeze_backbone_stages(body, freeze_stages)
    return ResNeStFPN(body, fpn_norm=fpn_norm)


def create_detection_model(
    arch: str,
    backbone: str,
    num_classes: int,
    norm: str = DetectConfig.norm,
    pretrained: Union[bool, str] = False,
    min_size: Union[int, Sequence[int]] = TRAIN_MIN_SIZES,
    max_size: int = DetectConfig.max_size,
    freeze_stages: Optional[int] = DetectConfig.freeze_stages,
    fpn_norm: Optional[str] = DetectConfig.fpn_norm,
    backbone_kwargs: Optional[Dict[str, Any]] = None,
    box_head: str = DetectConfig.box_head,
    head_norm: Optional[str] = DetectConfig.head_norm,
    **kwargs: Any,
) -> GeneralizedRCNN:
    """A torchvision detector on a ResNeSt-FPN backbone.

    The defaults are those of ``detect train`` (``config.schemas.DetectConfig``), so a model built here and one
    trained by the command with the same arguments are the same network.

    Args:
        arch: ``faster_rcnn``, ``mask_rcnn``, ``cascade_rcnn`` or ``cascade_mask_rcnn``.
        backbone: registered ResNeSt name (see ``resnest_fpn_backbone``).
        norm: backbone normalisation (see ``resnest_fpn_backbone``).
        pretrained: backbone weights (see ``resnest_fpn_backbone``).
        freeze_stages: the stem and first stages frozen (see ``resnest_fpn_backbone``).
        fpn_norm: normalisation inside the FPN (see ``resnest_fpn_backbone``).
        num_classes: classes including the background (index 0).
        min_size: training short side, one value or several sampled per image; evaluation uses the last.
        max_size: longest side cap.
        backbone_kwargs: ``create_model`` overrides (``{"bottleneck_width": 16}`` ...).
        box_head: ``2fc`` (default: torchvision's head, and what checkpoints written before this option
            hold) or ``4conv1fc`` (the paper's); every cascade stage gets its own.
        head_norm: normalisation of the conv heads, the ``4conv1fc`` box head's and the mask head's
            (``None``: convs with bias, as torchvision; ``syncbn`` in the paper). A model without a conv
            head (``2fc`` Faster/Cascade R-CNN) raises ValueError rather than ignoring it.
        **kwargs: more ``FasterRCNN``/``MaskRCNN`` arguments (``box_detections_per_img``, default
            ``--detections-per-img``'s; ``rpn_post_nms_top_n_train`` ...), applied to every cascade stage where
            they concern it.

    Input/output are torchvision's: a list of (3, H, W) float images in 0..1 (normalised inside with
    the ImageNet mean and std); in training also targets, returning a dict of losses; in evaluation a
    list of dicts ``boxes`` (N, 4) xyxy in input-image pixels, ``labels`` (N,) in 1..K-1, ``scores``
    (N,), and for mask models ``masks`` (N, 1, H, W) probabilities. Under fp16/bf16 autocast the anchors,
    proposals, boxes and scores are float32 (``precision.py``).
    """
    if arch not in ARCHS:
        close = difflib.get_close_matches(arch, ARCHS, n=2, cutoff=0.4)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise UsageError(f"unknown detection arch {arch!r}.{hint} Choose one of {', '.join(ARCHS)}.")
    if num_classes < 2:
        raise UsageError(f"num_classes counts the background too, so it must be >= 2, got {num_classes}.")
    if head_norm is not None and box_head == "2fc" and "mask" not in arch:
        raise UsageError(
            f"head_norm={head_norm!r} normalises the conv heads, but {arch} with box_head='2fc' has "
            f"none: use box_head='4conv1fc' (the paper's head) or drop head_norm."
        )
    head_norm_layer = trainable_norm(head_norm, "head_norm")
    make_box_head = make_box_head_factory(box_head, head_norm_layer)
    features = resnest_fpn_backbone(backbone, norm, pretrained, freeze_stages, fpn_norm, **(backbone_kwargs or {}))
    sizes = (min_size,) if isinstance(min_size, int) else tuple(int(s) for s in min_size)
    kwargs.setdefault("box_detections_per_img", DetectConfig.detections_per_img)
    if "mask" in arch:  # torchvision's mask head (four 3x3 convs 256->256, dilation 1), normalised if asked
        kwargs.setdefault("mask_head", MaskRCNNHeads(FPN_CHANNELS, [FPN_CHANNELS] * 4, 1, norm_layer=head_norm_layer))
        detector_class = MaskRCNN
    else:
        detector_class = FasterRCNN
    model = detector_class(features, num_classes, min_size=sizes, max_size=max_size, box_head=make_box_head(), **kwargs)
    if arch.startswith("cascade"):
        old = model.roi_heads
        model.roi_heads = CascadeRoIHeads(
            old.box_roi_pool,
            FPN_CHANNELS * ROI_SIZE * ROI_SIZE,
            num_classes,
            ious=CASCADE_IOUS,
            reg_weights=CASCADE_REG_WEIGHTS,
            representation_size=REPRESENTATION_SIZE,
            batch_size_per_image=old.fg_bg_sampler.batch_size_per_image,
            positive_fraction=old.fg_bg_sampler.positive_fraction,
            score_thresh=old.score_thresh,
            nms_thresh=old.nms_thresh,
            detections_per_img=old.detections_per_img,
            mask_roi_pool=old.mask_roi_pool,
            mask_head=old.mask_head,
            mask_predictor=old.mask_predictor,
            make_box_head=make_box_head,
        )
    model.arch, model.backbone_name = arch, features.body.model_name
    return keep_box_geometry_in_float32(model)  # anchors, box decoding and scores in float32 under autocast
