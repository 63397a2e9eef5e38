"""DeepLabV3/FCN on dilated ResNeSt, whole-image / sliding / multi-scale prediction, and evaluation."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.models.segmentation.deeplabv3 import ASPP, ASPPPooling, DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead

from splitattn.data.segmentation import IGNORE_INDEX, collate_eval
from splitattn.models.registry import create_model
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
