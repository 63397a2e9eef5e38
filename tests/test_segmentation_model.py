"""DeepLabV3/FCN on dilated ResNeSt (heads checked against PyTorch-Encoding's), their normalisation and batch-of-one
errors, whole-image / sliding / multi-scale prediction, and evaluation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision.models.segmentation.deeplabv3 import ASPP, ASPPPooling, DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead

from splitattn.data.segmentation import IGNORE_INDEX, collate_eval
from splitattn.models import create_model
from splitattn.tasks.segmentation import create_segmentation_model, segmentation_loss
from splitattn.tasks.segmentation.engine import evaluate
from splitattn.tasks.segmentation.inference import predict_probs, window_starts
from splitattn.tasks.segmentation.metrics import ConfusionMatrix

TINY = dict(bottleneck_width=16, stem_width=8)  # resnest14 layout at a fraction of the width, for speed


def _aspp_rates(model) -> list:
    aspp = model.head[0]
    assert isinstance(aspp, ASPP) and isinstance(aspp.convs[-1], ASPPPooling)  # the image-pooling branch
    return [branch[0].dilation[0] for branch in aspp.convs[1:-1]]


@pytest.mark.parametrize("output_stride, rates", [(8, [12, 24, 36]), (16, [6, 12, 18])])
def test_deeplabv3_geometry_and_outputs(output_stride, rates):
    model = create_segmentation_model("resnest14", 5, output_stride=output_stride, **TINY)
    assert isinstance(model.head, DeepLabHead) and isinstance(model.aux_head, FCNHead)
    assert _aspp_rates(model) == rates
    assert model.backbone.reductions == [output_stride, output_stride]
    assert model.backbone.channels == [1024, 2048]
    x = torch.randn(2, 3, 70, 90)
    out = model(x)
    assert out["out"].shape == out["aux"].shape == (2, 5, 70, 90)
    model.eval()
    with torch.no_grad():
        assert set(model(x)) == {"out"}  # the auxiliary head only serves training


def test_fcn_baseline_without_aux():
    model = create_segmentation_model("resnest14", 3, head="fcn", aux=False, **TINY)
    assert isinstance(model.head, FCNHead) and model.aux_head is None
    out = model(torch.randn(2, 3, 64, 64))
    assert set(out) == {"out"} and out["out"].shape == (2, 3, 64, 64)


def test_loss_weights_aux_head_by_0_2():
    target = torch.randint(0, 4, (2, 8, 8))
    target[0, 0] = IGNORE_INDEX
    outputs = {"out": torch.randn(2, 4, 8, 8), "aux": torch.randn(2, 4, 8, 8)}
    ce = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    expected = ce(outputs["out"], target) + 0.2 * ce(outputs["aux"], target)
    assert torch.allclose(segmentation_loss(outputs, target, IGNORE_INDEX), expected)


def test_backbone_loads_a_classification_checkpoint(tmp_path):
    classifier = create_model("resnest14", num_classes=10, **TINY)
    path = tmp_path / "classifier.pth"
    torch.save({"state_dict": classifier.state_dict()}, path)
    model = create_segmentation_model("resnest14", 4, pretrained=str(path), **TINY)
    expected = classifier.state_dict()
    loaded = model.backbone.state_dict()
    assert loaded and all(torch.equal(value, expected[key]) for key, value in loaded.items())


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="unknown head"):
        create_segmentation_model("resnest14", 3, head="pspnet")
    with pytest.raises(ValueError, match="output_stride must be 8 or 16"):
        create_segmentation_model("resnest14", 3, output_stride=32)


class PixelModel(nn.Module):
    """Per-pixel logits (a 1x1 conv): every window of an image sees the same thing."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, classes, 1)

    def forward(self, x):
        return {"out": self.conv(x)}


def test_window_starts_cover_the_image():
    assert window_starts(10, 10, 7) == [0]
    starts = window_starts(100, 48, 32)
    assert starts == [0, 32, 52]
    covered = set()
    for start in starts:
        covered |= set(range(start, start + 48))
    assert covered == set(range(100))


def test_single_scale_equals_softmax_and_flip_averages():
    model = create_segmentation_model("resnest14", 3, aux=False, **TINY).eval()
    image = torch.randn(3, 40, 56)
    with torch.no_grad():
        plain = model(image[None])["out"].softmax(1)[0]
        mirrored = model(image.flip(-1)[None])["out"].softmax(1)[0].flip(-1)
    assert torch.allclose(predict_probs(model, image), plain, atol=1e-6)
    assert torch.allclose(predict_probs(model, image, flip=True), (plain + mirrored) / 2, atol=1e-6)


def test_sliding_windows_match_one_pass_for_a_per_pixel_model():
    model = PixelModel().eval()
    image = torch.randn(3, 50, 75)
    whole = predict_probs(model, image)
    assert torch.allclose(predict_probs(model, image, crop_size=32), whole, atol=1e-6)


def test_multi_scale_output_is_a_distribution_at_full_size():
    model = create_segmentation_model("resnest14", 4, output_stride=16, aux=False, **TINY).eval()
    probs = predict_probs(model, torch.randn(3, 48, 64), scales=(0.5, 1.0, 1.5), flip=True, base_size=64, crop_size=64)
    assert probs.shape == (4, 48, 64)
    assert torch.allclose(probs.sum(0), torch.ones(48, 64), atol=1e-5)


def test_evaluate_accumulates_one_confusion_matrix_over_images_of_different_sizes():
    model = PixelModel(2).eval()
    with torch.no_grad():  # predict class 1 where the first channel is positive
        model.conv.weight.zero_()
        model.conv.bias.zero_()
        model.conv.weight[1, 0] = 1.0
    images = [torch.randn(3, 40, 56), torch.randn(3, 64, 36)]
    targets = [torch.randint(0, 2, (40, 56)), torch.randint(0, 2, (64, 36))]
    targets[1][0] = IGNORE_INDEX
    loader = DataLoader(list(zip(images, targets)), batch_size=2, collate_fn=collate_eval)
    result = evaluate(model, loader, 2, torch.device("cpu"), ["a", "b"])
    expected = ConfusionMatrix(2, IGNORE_INDEX)
    for image, target in zip(images, targets):
        expected.update((image[0] > 0).long(), target)
    reference = expected.compute(["a", "b"])
    assert result["images"] == 2
    assert result["labelled_pixels"] == 40 * 56 + 63 * 36
    assert result["miou"] == pytest.approx(reference["miou"])
    assert result["pixel_acc"] == pytest.approx(reference["pixel_acc"])


def _conv_norm_relu(cin, cout, norm, kernel=1, dilation=1):
    return [
        nn.Conv2d(cin, cout, kernel, padding=dilation if kernel == 3 else 0, dilation=dilation, bias=False),
        norm(cout),
        nn.ReLU(),
    ]


class EncodingDeepLabV3Head(nn.Module):
    """PyTorch-Encoding's DeepLabV3Head (encoding/models/sseg/deeplab.py), written out for the comparison:
    ASPP_Module (b0 1x1, b1-b3 3x3 atrous, b4 image pooling; project 1x1, norm, ReLU, Dropout2d(0.5)), then
    3x3 conv, norm, ReLU, Dropout2d(0.1), 1x1 classifier; upsampling with align_corners=True."""

    def __init__(self, in_channels, num_classes, rates, norm):
        super().__init__()
        inter = in_channels // 8
        self.b0 = nn.Sequential(*_conv_norm_relu(in_channels, inter, norm))
        self.b1, self.b2, self.b3 = (nn.Sequential(*_conv_norm_relu(in_channels, inter, norm, 3, r)) for r in rates)
        self.b4 = nn.Sequential(nn.AdaptiveAvgPool2d(1), *_conv_norm_relu(in_channels, inter, norm))
        self.project = nn.Sequential(*_conv_norm_relu(5 * inter, inter, norm), nn.Dropout2d(0.5))
        self.block = nn.Sequential(
            *_conv_norm_relu(inter, inter, norm, 3), nn.Dropout2d(0.1), nn.Conv2d(inter, num_classes, 1)
        )

    def forward(self, x):
        pooled = F.interpolate(self.b4(x), x.shape[-2:], mode="bilinear", align_corners=True)
        return self.block(self.project(torch.cat([self.b0(x), self.b1(x), self.b2(x), self.b3(x), pooled], 1)))


class EncodingFCNHead(nn.Sequential):
    """PyTorch-Encoding's FCNHead (encoding/models/sseg/fcn.py, without with_global)."""

    def __init__(self, in_channels, num_classes, norm):
        super().__init__(
            *_conv_norm_relu(in_channels, in_channels // 4, norm, 3),
            nn.Dropout(0.1),
            nn.Conv2d(in_channels // 4, num_classes, 1),
        )


def _load_in_order(reference, ours):
    """Copy our head's weights into the reference: both list their tensors in the same order."""
    theirs, mine = reference.state_dict(), list(ours.state_dict().values())
    assert [v.shape for v in theirs.values()] == [v.shape for v in mine]
    reference.load_state_dict(dict(zip(theirs, mine)))


@pytest.mark.parametrize(
    "norm_layer, norm", [("batchnorm", nn.BatchNorm2d), ("groupnorm", lambda c: nn.GroupNorm(32, c))]
)
def test_heads_equal_pytorch_encodings_in_training_and_evaluation(norm_layer, norm):
    """Same weights, same random seed: our DeepLabV3 and FCN heads give PyTorch-Encoding's outputs, dropouts
    (their kind, rate and place) included in training mode; the heads' norm follows the backbone's."""
    model = create_segmentation_model("resnest14", 5, norm_layer=norm_layer, **TINY)
    references = [
        (model.head, EncodingDeepLabV3Head(2048, 5, (12, 24, 36), norm), torch.randn(2, 2048, 9, 11)),
        (model.aux_head, EncodingFCNHead(1024, 5, norm), torch.randn(2, 1024, 9, 11)),
    ]
    for ours, reference, x in references:
        _load_in_order(reference, ours)
        for training in (True, False):
            ours.train(training), reference.train(training)
            torch.manual_seed(1)
            expected = reference(x)
            torch.manual_seed(1)
            assert torch.allclose(ours(x), expected, atol=1e-5), (type(ours).__name__, training)


def test_groupnorm_model_trains_on_a_batch_of_one():
    """norm_layer='groupnorm' puts GroupNorm in the heads too: no BatchNorm anywhere, so one image trains."""
    model = create_segmentation_model("resnest14", 3, norm_layer="groupnorm", **TINY).train()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    out = model(torch.randn(1, 3, 48, 64))
    segmentation_loss(out, torch.randint(0, 3, (1, 48, 64)), IGNORE_INDEX).backward()
    assert out["out"].shape == out["aux"].shape == (1, 3, 48, 64)


def test_batchnorm_heads_refuse_a_batch_of_one_clearly():
    """On a frozen-BN backbone (which takes one image) the heads' BatchNorm: torch's "Expected more than 1 value
    per channel" from ASPP's pooling branch becomes an error naming the fixes; evaluation, the FCN head (no
    pooling branch) and head_norm='groupnorm' take one image."""
    model = create_segmentation_model("resnest14", 3, norm_layer="frozenbn", **TINY).train()
    with pytest.raises(ValueError, match="batch of 1 image.*image-pooling branch.*head_norm='groupnorm'"):
        model(torch.randn(1, 3, 48, 64))
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 48, 64))["out"].shape == (1, 3, 48, 64)
    for kwargs in (dict(head="fcn"), dict(head_norm="groupnorm")):
        model = create_segmentation_model("resnest14", 3, norm_layer="frozenbn", **kwargs, **TINY).train()
        assert model(torch.randn(1, 3, 48, 64))["out"].shape == (1, 3, 48, 64)


def test_frozen_batchnorm_backbone_gets_trainable_batchnorm_heads():
    model = create_segmentation_model("resnest14", 3, norm_layer="frozenbn", **TINY)
    assert all(isinstance(m, nn.BatchNorm2d) for m in model.head.modules() if "Norm" in type(m).__name__)
    with pytest.raises(ValueError, match="head_norm='frozenbn'.*freeze nothing"):
        create_segmentation_model("resnest14", 3, head_norm="frozenbn", **TINY)


def test_run_options_reach_the_backbone():
    """``--model-kwargs`` of ``segment train`` (widths, ``in_chans``) build the backbone, as in the other tasks."""
    from splitattn.config import SegmentConfig
    from splitattn.tasks.segmentation.checkpoint import model_from_config

    config = SegmentConfig(
        backbone="resnest14",
        norm="groupnorm",
        output_stride=16,
        model_kwargs={"in_chans": 1, "bottleneck_width": 16, "stem_width": 16},
    )
    model = model_from_config(config, 3).eval()
    assert model.backbone.conv1[0].in_channels == 1 and model.backbone.conv1[0].out_channels == 16
    assert model(torch.randn(1, 1, 64, 64))["out"].shape == (1, 3, 64, 64)
