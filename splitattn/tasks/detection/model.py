"""Faster / Mask / Cascade (Mask) R-CNN on a ResNeSt + FPN backbone, built from torchvision parts.

The backbone is ``create_model(name, features_only=True, out_indices=(1, 2, 3, 4))`` (strides
4-32) under torchvision's ``FeaturePyramidNetwork`` with a max-pooled extra level: five 256-channel
maps at strides 4, 8, 16, 32 and 64 named ``"0"``..``"3"``, ``"pool"``, the layout torchvision's
detectors expect. The detectors are torchvision's ``FasterRCNN`` and ``MaskRCNN``; the cascade
variants replace their ``roi_heads`` with ``CascadeRoIHeads`` (``cascade.py``).
"""
from __future__ import annotations

import difflib
from collections import OrderedDict
from typing import Any, Dict, Optional, Sequence, Union

from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ...layers.norm import freeze_batch_norm, make_norm_layer
from ...models.registry import create_model
from ...models.resnest import ResNeStFeatures
from .cascade import CASCADE_IOUS, CASCADE_REG_WEIGHTS, CascadeRoIHeads

ARCHS = ("faster_rcnn", "mask_rcnn", "cascade_rcnn", "cascade_mask_rcnn")
FPN_CHANNELS = 256
# Parameter-name prefixes of the backbone, last stage first: trainable_layers=k trains the first k.
STAGE_PREFIXES = ("layer4", "layer3", "layer2", "layer1", "conv1", "bn1")
# The paper's multi-scale training: short side sampled from 640..800 in steps of 32; tested at 800.
TRAIN_MIN_SIZES = tuple(range(640, 801, 32))


class ResNeStFPN(nn.Module):
    """ResNeSt stages 1-4 -> FPN (+ max-pooled P6), the backbone torchvision's detectors take.

    Shape: (N, 3, H, W) -> OrderedDict ``"0"``..``"3"``, ``"pool"`` of (N, 256, H / s, W / s) for
    strides s = 4, 8, 16, 32, 64 (rounded up). ``out_channels`` is 256, as ``FasterRCNN`` requires.
    """

    def __init__(self, body: ResNeStFeatures, out_channels: int = FPN_CHANNELS,
                 fpn_norm: Optional[str] = None) -> None:
        super().__init__()
        if body.out_indices != [1, 2, 3, 4]:
            raise ValueError(f"the FPN needs stages 1-4 (out_indices=(1, 2, 3, 4)), got {body.out_indices}.")
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.channels, out_channels, extra_blocks=LastLevelMaxPool(),
                                         norm_layer=make_norm_layer(fpn_norm) if fpn_norm else None)
        self.out_channels = out_channels
        self.strides = [*body.reductions, body.reductions[-1] * 2]

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        features = self.body(x)
        return self.fpn(OrderedDict((str(index), feature) for index, feature in enumerate(features)))


def freeze_stages(body: ResNeStFeatures, trainable_layers: int) -> None:
    """Train only the last ``trainable_layers`` stages (5: all, the stem included; 0: none).

    Frozen parameters get ``requires_grad=False`` and the BatchNorms of frozen stages become
    ``FrozenBatchNorm2d``, so their running statistics stay the pretrained ones in training mode.
    """
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be 0..5 (stages trained from the last one), got {trainable_layers}.")
    trained = STAGE_PREFIXES[:trainable_layers] + (("bn1",) if trainable_layers == 5 else ())
    for name in STAGE_PREFIXES:
        if name not in trained:
            frozen = freeze_batch_norm(getattr(body, name))  # a new module for bn1, else changed in place
            setattr(body, name, frozen)
            for parameter in frozen.parameters():
                parameter.requires_grad_(False)


def resnest_fpn_backbone(
    backbone: str,
    norm: str = "frozenbn",
    pretrained: Union[bool, str] = False,
    trainable_layers: Optional[int] = None,
    fpn_norm: Optional[str] = None,
    **overrides: Any,
) -> ResNeStFPN:
    """A registered ResNeSt (any ``list_models()`` name) as an FPN detection backbone.

    Args:
        backbone: model name (``resnest50``, ``resnest50_fast_2s2x40d`` ...).
        norm: the backbone's normalisation: ``frozenbn`` (default), ``syncbn`` (the paper),
            ``batchnorm`` or ``groupnorm``.
        pretrained: ``True`` (registered ImageNet weights), or a path/URL of any ResNeSt
            classification checkpoint, ours (``splitattn train``'s ``last.pt``) or official.
        trainable_layers: stages trained, counted from the last (0-5); default 3 with frozen BN
            (torchvision's choice), 5 otherwise (the paper trains all with SyncBN).
        fpn_norm: normalisation inside the FPN (``None``: plain convs with bias, as torchvision).
        **overrides: more ``create_model`` arguments (``bottleneck_width`` ...).
    """
    body = create_model(backbone, pretrained=pretrained, features_only=True, out_indices=(1, 2, 3, 4),
                        norm_layer=norm, **overrides)
    if trainable_layers is None:
        trainable_layers = 3 if norm == "frozenbn" else 5
    freeze_stages(body, trainable_layers)
    return ResNeStFPN(body, fpn_norm=fpn_norm)


def create_detection_model(
    arch: str,
    backbone: str,
    num_classes: int,
    norm: str = "frozenbn",
    pretrained: Union[bool, str] = False,
    min_size: Union[int, Sequence[int]] = TRAIN_MIN_SIZES,
    max_size: int = 1333,
    trainable_layers: Optional[int] = None,
    fpn_norm: Optional[str] = None,
    backbone_kwargs: Optional[Dict[str, Any]] = None,
    **kwargs: Any,
) -> GeneralizedRCNN:
    """A torchvision detector on a ResNeSt-FPN backbone.

    Args:
        arch: ``faster_rcnn``, ``mask_rcnn``, ``cascade_rcnn`` or ``cascade_mask_rcnn``.
        backbone, norm, pretrained, trainable_layers, fpn_norm: see ``resnest_fpn_backbone``.
        num_classes: classes including the background (index 0).
        min_size: training short side, one value or several sampled per image; evaluation uses the last.
        max_size: longest side cap.
        backbone_kwargs: ``create_model`` overrides (``{"bottleneck_width": 16}`` ...).
        **kwargs: more ``FasterRCNN``/``MaskRCNN`` arguments (``box_detections_per_img``,
            ``rpn_post_nms_top_n_train`` ...), applied to every cascade stage where they concern it.

    Input/output are torchvision's: a list of (3, H, W) float images in 0..1 (normalised inside with
    the ImageNet mean and std); in training also targets, returning a dict of losses; in evaluation a
    list of dicts ``boxes`` (N, 4) xyxy in input-image pixels, ``labels`` (N,) in 1..K-1, ``scores``
    (N,), and for mask models ``masks`` (N, 1, H, W) probabilities.
    """
    if arch not in ARCHS:
        close = difflib.get_close_matches(arch, ARCHS, n=2, cutoff=0.4)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ValueError(f"unknown detection arch {arch!r}.{hint} Choose one of {', '.join(ARCHS)}.")
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background too, so it must be >= 2, got {num_classes}.")
    features = resnest_fpn_backbone(backbone, norm, pretrained, trainable_layers, fpn_norm, **(backbone_kwargs or {}))
    sizes = (min_size,) if isinstance(min_size, int) else tuple(int(s) for s in min_size)
    detector_class = MaskRCNN if "mask" in arch else FasterRCNN
    model = detector_class(features, num_classes, min_size=sizes, max_size=max_size, **kwargs)
    if arch.startswith("cascade"):
        old = model.roi_heads
        model.roi_heads = CascadeRoIHeads(
            old.box_roi_pool, FPN_CHANNELS * 7 * 7, num_classes, ious=CASCADE_IOUS, reg_weights=CASCADE_REG_WEIGHTS,
            batch_size_per_image=old.fg_bg_sampler.batch_size_per_image,
            positive_fraction=old.fg_bg_sampler.positive_fraction, score_thresh=old.score_thresh,
            nms_thresh=old.nms_thresh, detections_per_img=old.detections_per_img,
            mask_roi_pool=old.mask_roi_pool, mask_head=old.mask_head, mask_predictor=old.mask_predictor)
    model.arch, model.backbone_name = arch, features.body.model_name
    return model
