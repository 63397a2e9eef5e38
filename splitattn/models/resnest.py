"""The ResNeSt network: ResNet-D with Split-Attention bottlenecks.

Module and parameter names follow the official PyTorch implementation (which timm shares):
``conv1`` (deep stem, a Sequential), ``bn1``, ``layer1``..``layer4`` of ``Bottleneck``
blocks with ``conv1/bn1/conv2/conv3/bn3/downsample``, and the classifier ``fc``. Official
checkpoints therefore load with ``strict=True`` and no renaming.

About 400 lines, one idea: the input checks, the bottleneck, the network and its features wrapper
share the stage geometry and the block layout, and the BatchNorm folding (``splitattn.optimize``)
and the detection/segmentation backbones rely on those names together.
"""

from typing import List, Optional, Sequence, Tuple, Union

# No `from __future__ import annotations` here: TorchScript reads the annotations of the
# @torch.jit.unused methods and cannot resolve postponed (string) ones.
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from ..layers.drop_block import DropBlock2d, check_drop_prob
from ..layers.norm import NormFactory, has_learnable_weight, make_norm_layer
from ..layers.split_attention import SplitAttention

# Below this the five stride-2 steps act on maps that are mostly padding.
MIN_INPUT_SIZE = 32
# (stride, dilation) of layer1..layer4 for each output stride, as in the official `dilated`/`dilation` options.
STAGE_GEOMETRY = {
    32: ((1, 1), (2, 1), (2, 1), (2, 1)),
    16: ((1, 1), (2, 1), (2, 1), (1, 2)),
    8: ((1, 1), (2, 1), (1, 2), (1, 4)),
}


def check_image_batch(x: Tensor, in_chans: int, min_size: int = MIN_INPUT_SIZE) -> None:
    """Raise a clear error for input the network cannot take (instead of a cryptic conv error)."""
    if torch.jit.is_tracing():  # shapes are symbolic while exporting
        return
    if x.dim() != 4:
        raise UsageError(
            f"ResNeSt expects a batch of images shaped (N, C, H, W), got a tensor of shape {list(x.shape)}; "
            "add a batch dimension with x.unsqueeze(0) for a single image."
        )
    if not x.is_floating_point():
        raise TypeError(
            f"ResNeSt expects a floating-point tensor, got {x.dtype}; convert images with "
            "x.float() / 255 and normalise them with the model's mean and std (model.eval_config)."
        )
    if x.shape[1] != in_chans:
        raise UsageError(
            f"ResNeSt was built for {in_chans} input channels but got {x.shape[1]} "
            f"(input shape {list(x.shape)}); pass channels-first images (N, C, H, W) or build "
            f"the model with in_chans={x.shape[1]}."
        )
    if x.shape[2] < min_size or x.shape[3] < min_size:
        raise UsageError(
            f"Input of {x.shape[2]}x{x.shape[3]} pixels is too small for ResNeSt, which downsamples "
            f"by 32; resize images to at least {min_size}x{min_size}."
        )


class Bottleneck(nn.Module):
    """ResNeSt bottleneck: 1x1 conv -> Split-Attention 3x3 conv -> 1x1 conv, plus shortcut.

    ``radix == 0`` gives the plain ResNet-D bottleneck (3x3 conv + BN + ReLU), the paper's
    baseline built from the same code. With ``avd``, the block's stride moves from the 3x3
    conv to a 3x3 average pool placed before (``avd_first``) or after the 3x3 conv.

    Shape: (N, inplanes, H, W) -> (N, planes * 4, H / stride, W / stride).
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: Optional[nn.Module] = None,
        radix: int = 2,
        cardinality: int = 1,
        bottleneck_width: int = 64,
        avd: bool = True,
        avd_first: bool = False,
        is_first: bool = False,
        norm_layer: NormFactory = nn.BatchNorm2d,
        drop_block: bool = False,
    ) -> None:
        super().__init__()
        group_width = int(planes * (bottleneck_width / 64.0)) * cardinality
        self.radix = radix
        use_avd = avd and (stride > 1 or is_first)
        conv_stride = 1 if use_avd else stride

        def make_drop_block() -> Optional[nn.Module]:
            return DropBlock2d(0.0, block_size=3) if drop_block else None

        self.conv1 = nn.Conv2d(inplanes, group_width, kernel_size=1, bias=False)
        self.bn1 = norm_layer(group_width)
        self.drop_block1 = make_drop_block()
        self.avd_first = nn.AvgPool2d(3, stride, padding=1) if use_avd and avd_first else None
        if radix >= 1:
            self.conv2 = SplitAttention(
                group_width,
                group_width,
                kernel_size=3,
                stride=conv_stride,
                padding=dilation,
                dilation=dilation,
                cardinality=cardinality,
                radix=radix,
                bias=False,
                norm_layer=norm_layer,
                drop_block=make_drop_block(),
            )
            self.bn2 = None
            self.drop_block2 = None
        else:
            self.conv2 = nn.Conv2d(
                group_width,
                group_width,
                kernel_size=3,
                stride=conv_stride,
                padding=dilation,
                dilation=dilation,
                groups=cardinality,
                bias=False,
            )
            self.bn2 = norm_layer(group_width)
            self.drop_block2 = make_drop_block()
        self.avd_last = nn.AvgPool2d(3, stride, padding=1) if use_avd and not avd_first else None
        self.conv3 = nn.Conv2d(group_width, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = norm_layer(planes * self.expansion)
        self.drop_block3 = make_drop_block()
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(x))
        if self.drop_block1 is not None:
            out = self.drop_block1(out)
        out = F.relu(out, inplace=True)
        if self.avd_first is not None:
            out = self.avd_first(out)
        out = self.conv2(out)
        if self.bn2 is not None:  # radix 0: plain conv, then norm (+ DropBlock) and ReLU
            out = self.bn2(out)
            if self.drop_block2 is not None:
                out = self.drop_block2(out)
            out = F.relu(out, inplace=True)
        if self.avd_last is not None:
            out = self.avd_last(out)
        out = self.bn3(self.conv3(out))
        if self.drop_block3 is not None:
            out = self.drop_block3(out)
        return self.add_shortcut(out, x)

    def add_shortcut(self, out: Tensor, x: Tensor) -> Tensor:
        """relu(out + shortcut(x)), in place on ``out``."""
        out += self.downsample(x) if self.downsample is not None else x
        return F.relu(out, inplace=True)


def make_downsample(
    inplanes: int, outplanes: int, stride: int, avg_down: bool, norm_layer: NormFactory
) -> nn.Sequential:
    """Shortcut projection. ResNet-D (``avg_down``): average-pool with the stride, then a 1x1 conv."""
    if not avg_down:
        return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False), norm_layer(outplanes))
    pool: nn.Module = (
        nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
    )
    return nn.Sequential(pool, nn.Conv2d(inplanes, outplanes, 1, bias=False), norm_layer(outplanes))


def make_stem(in_chans: int, stem_width: int, deep_stem: bool, norm_layer: NormFactory) -> Tuple[nn.Module, int]:
    """The stride-2 stem conv(s) (without the final norm), and its output channels.

    Deep stem (ResNet-C/D): three 3x3 convs, ``stem_width``, ``stem_width``, ``2 * stem_width``.
    """
    if not deep_stem:
        return nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False), 64
    stem = nn.Sequential(
        nn.Conv2d(in_chans, stem_width, 3, stride=2, padding=1, bias=False),
        norm_layer(stem_width),
        nn.ReLU(inplace=True),
        nn.Conv2d(stem_width, stem_width, 3, stride=1, padding=1, bias=False),
        norm_layer(stem_width),
        nn.ReLU(inplace=True),
        nn.Conv2d(stem_width, stem_width * 2, 3, stride=1, padding=1, bias=False),
    )
    return stem, stem_width * 2


class ResNeSt(nn.Module):
    """ResNeSt (and, with ``radix=0``, ResNet-D) for image classification.

    Args:
        layers: blocks per stage, e.g. (3, 4, 6, 3) for depth 50.
        radix: splits per cardinal group R (0: plain ResNet-D bottleneck, 1: sigmoid gate).
        cardinality: cardinal groups K.
        bottleneck_width: per-group width d of the "RsKxd" notation.
        stem_width: width of the deep stem's first convs (32 or 64).
        deep_stem: the ResNet-D stem (three 3x3 convs instead of one 7x7).
        avg_down: the ResNet-D shortcut (average pool, then a stride-1 1x1 conv).
        avd: move the block's stride to a 3x3 average pool.
        avd_first: put that pool before the 3x3 conv (else after it).
        num_classes: classifier outputs; 0 gives pooled features (N, 2048).
        in_chans: image channels.
        output_stride: 32, or 16/8 with dilated stages 4 (and 3), for dense prediction.
        drop_rate: dropout before the classifier.
        drop_block_prob: build DropBlock (block 3, per-channel masks) into stages 3 and 4 with
            this probability, in [0, 1); ramp it during training with ``set_drop_block_prob``.
        norm_layer: ``batchnorm``, ``syncbn``, ``frozenbn``, ``groupnorm`` or a factory.
        zero_init_last: zero the last BN gamma of each block (the recipe's "last gamma"); norms
            whose weight does not learn (``frozenbn``) keep gamma 1.

    Shape: (N, in_chans, H, W) -> (N, num_classes) logits, H and W at least 32.
    """

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 6, 3),
        radix: int = 2,
        cardinality: int = 1,
        bottleneck_width: int = 64,
        stem_width: int = 32,
        deep_stem: bool = True,
        avg_down: bool = True,
        avd: bool = True,
        avd_first: bool = False,
        num_classes: int = 1000,
        in_chans: int = 3,
        output_stride: int = 32,
        drop_rate: float = 0.0,
        drop_block_prob: float = 0.0,
        norm_layer: Union[str, NormFactory] = "batchnorm",
        zero_init_last: bool = True,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise UsageError(f"layers must give four positive block counts, got {tuple(layers)}.")
        if output_stride not in STAGE_GEOMETRY:
            raise UsageError(f"output_stride must be one of 8, 16, 32, got {output_stride}.")
        if radix < 0:
            raise UsageError(f"radix must be >= 0, got {radix}.")
        check_drop_prob(drop_block_prob)
        norm = make_norm_layer(norm_layer)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.drop_rate = drop_rate

        self.conv1, inplanes = make_stem(in_chans, stem_width, deep_stem, norm)
        self.bn1 = norm(inplanes)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        self.feature_info = []
        reduction, prev_dilation = 4, 1
        for stage, (blocks, planes, (stride, dilation)) in enumerate(
            zip(layers, (64, 128, 256, 512), STAGE_GEOMETRY[output_stride]), start=1
        ):
            outplanes = planes * Bottleneck.expansion
            downsample = None
            if stride != 1 or inplanes != outplanes:
                downsample = make_downsample(inplanes, outplanes, stride, avg_down, norm)
            stage_blocks = []
            for index in range(blocks):
                stage_blocks.append(
                    Bottleneck(
                        inplanes if index == 0 else outplanes,
                        planes,
                        stride=stride if index == 0 else 1,
                        # The first block of a dilated stage keeps the previous stage's dilation.
                        dilation=prev_dilation if index == 0 else dilation,
                        downsample=downsample if index == 0 else None,
                        radix=radix,
                        cardinality=cardinality,
                        bottleneck_width=bottleneck_width,
                        avd=avd,
                        avd_first=avd_first,
                        is_first=index == 0 and stage > 1,
                        norm_layer=norm,
                        drop_block=drop_block_prob > 0 and stage >= 3,
                    )
                )
            self.add_module(f"layer{stage}", nn.Sequential(*stage_blocks))
            inplanes, prev_dilation = outplanes, dilation
            reduction *= stride
            self.feature_info.append({"num_chs": outplanes, "reduction": reduction, "module": f"layer{stage}"})
        self.num_features = inplanes

        self.fc = nn.Linear(inplanes, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(zero_init_last)
        if drop_block_prob > 0:
            self.set_drop_block_prob(drop_block_prob)

    def _init_weights(self, zero_init_last: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_last:
            # Only a gamma that training updates: a frozen norm's zero would silence the branch forever.
            for module in self.modules():
                if isinstance(module, Bottleneck) and has_learnable_weight(module.bn3):
                    nn.init.zeros_(module.bn3.weight)

    @torch.jit.ignore
    def set_drop_block_prob(self, prob: float) -> None:
        """Set the DropBlock probability of every DropBlock layer (for the linear ramp).

        Changes the layers' probability buffers in place, so a ``torch.compile``d model is not
        recompiled. Raises ``ValueError`` unless ``0 <= prob < 1``, or for ``prob > 0`` on a
        model built without DropBlock.
        """
        prob = check_drop_prob(prob)
        layers = [m for m in self.modules() if isinstance(m, DropBlock2d)]
        if not layers and prob > 0:
            raise UsageError("This model has no DropBlock layers; build it with drop_block_prob > 0.")
        for layer in layers:
            layer.set_drop_prob(prob)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    @torch.jit.ignore
    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a freshly initialised one with ``num_classes`` outputs."""
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_stem(self, x: Tensor) -> Tensor:
        """(N, in_chans, H, W) -> (N, stem channels, H/2, W/2) after the stem's norm and ReLU."""
        check_image_batch(x, self.in_chans)
        return F.relu(self.bn1(self.conv1(x)), inplace=True)

    def forward_features(self, x: Tensor) -> Tensor:
        """(N, in_chans, H, W) -> (N, 2048, H/s, W/s), s the output stride."""
        x = self.maxpool(self.forward_stem(x))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """(N, 2048, h, w) -> (N, num_classes), or (N, 2048) pooled features if ``pre_logits``."""
        x = x.mean((2, 3))
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


class ResNeStFeatures(nn.Module):
    """A ResNeSt backbone returning feature maps of selected stages (``features_only=True``).

    Index 0 is the stem (stride 2), 1..4 are layer1..layer4 (strides 4, 8, 16, 32, or up to 8
    with dilation). Parameter names are those of the classification model minus ``fc``, so
    classification checkpoints load directly (``create_model(..., pretrained=...)`` drops ``fc``).

    Shape: (N, in_chans, H, W) -> list of (N, channels[i], H / reductions[i], W / reductions[i]).
    """

    __jit_unused_properties__ = ["channels", "reductions"]  # metadata, not part of the scripted graph

    def __init__(self, model: ResNeSt, out_indices: Sequence[int] = (1, 2, 3, 4)) -> None:
        super().__init__()
        out_indices = tuple(out_indices)
        if not out_indices or any(i not in range(5) for i in out_indices) or len(set(out_indices)) != len(out_indices):
            raise UsageError(f"out_indices must be distinct values in 0..4, got {out_indices}.")
        self.out_indices = sorted(out_indices)
        self.in_chans = model.in_chans
        self.conv1, self.bn1, self.maxpool = model.conv1, model.bn1, model.maxpool
        self.num_stages = max(self.out_indices)
        stem_chs = model.conv1[-1].out_channels if isinstance(model.conv1, nn.Sequential) else model.conv1.out_channels
        info = [{"num_chs": stem_chs, "reduction": 2, "module": "bn1"}] + model.feature_info
        # Stages past the last requested one are dropped (Identity: no parameters, no compute).
        for stage in range(1, 5):
            keep = stage <= self.num_stages
            self.add_module(f"layer{stage}", getattr(model, f"layer{stage}") if keep else nn.Identity())
        self.feature_info = [info[i] for i in self.out_indices]

    @property
    def channels(self) -> List[int]:
        """Channel count of each returned feature map."""
        return [f["num_chs"] for f in self.feature_info]

    @property
    def reductions(self) -> List[int]:
        """Stride (relative to the input) of each returned feature map."""
        return [f["reduction"] for f in self.feature_info]

    def forward(self, x: Tensor) -> List[Tensor]:
        check_image_batch(x, self.in_chans)
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        features: List[Tensor] = []
        if 0 in self.out_indices:
            features.append(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        if 1 in self.out_indices:
            features.append(x)
        if self.num_stages >= 2:
            x = self.layer2(x)
            if 2 in self.out_indices:
                features.append(x)
        if self.num_stages >= 3:
            x = self.layer3(x)
            if 3 in self.out_indices:
                features.append(x)
        if self.num_stages >= 4:
            x = self.layer4(x)
            features.append(x)
        return features
