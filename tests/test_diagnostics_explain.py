"""Grad-CAM and split-attention pictures: the heatmap equals Grad-CAM written out with autograd, the attention
weights equal timm's (an independent ResNeSt) r-softmax output on the same weights, and the check that the
recomputed weights reproduce the layer's output can fail."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import splitattn
from splitattn.errors import UsageError

from .conftest import randomize_state_dict, sample_photos

pytest.importorskip("matplotlib")

from splitattn.tasks.classification.explain import (  # noqa: E402
    capture_split_attention,
    grad_cam,
    split_attention_blocks,
    split_attention_weights,
    write_explanations,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    network = splitattn.create_model("resnest14", num_classes=10)
    network.load_state_dict(randomize_state_dict(network.state_dict(), seed=1))
    return network.eval()


def manual_grad_cam(model, inputs, target):
    """Grad-CAM (Selvaraju et al. 2017, eq. 1-2) with plain autograd on the last stage's output."""
    kept = {}
    handle = model.layer4.register_forward_hook(lambda module, args, output: kept.update(maps=output))
    with torch.enable_grad():
        logits = model(inputs)
        (gradients,) = torch.autograd.grad(logits[0, target], kept["maps"])
    handle.remove()
    weights = gradients.mean((2, 3), keepdim=True)
    cam = F.relu((weights * kept["maps"]).sum(1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=inputs.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    return cam / cam.max()


def test_grad_cam_equals_autograd(model):
    pytest.importorskip("captum")
    inputs = torch.randn(1, 3, 96, 96)
    cam, target, probabilities = grad_cam(model, inputs)
    assert target == int(model(inputs).argmax())
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert cam.shape == (96, 96) and float(cam.max()) == pytest.approx(1.0)
    assert torch.allclose(cam, manual_grad_cam(model, inputs, target), atol=1e-5)
    other = (target + 1) % 10
    cam_other, chosen, _ = grad_cam(model, inputs, target=other)
    assert chosen == other
    assert torch.allclose(cam_other, manual_grad_cam(model, inputs, other), atol=1e-5)


def test_grad_cam_restores_the_mode_and_changes_no_weight(model):
    pytest.importorskip("captum")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        grad_cam(model, torch.randn(1, 3, 64, 64))
        assert model.training
    finally:
        model.eval()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running statistics untouched too
    assert all(p.grad is None for p in model.parameters())


def test_split_attention_equals_timm_rsoftmax(model):
    timm = pytest.importorskip("timm")
    reference = timm.create_model("resnest14d", num_classes=10)
    reference.load_state_dict(model.state_dict())
    reference.eval()
    inputs = torch.randn(2, 3, 80, 80)
    blocks = split_attention_blocks(model)
    assert blocks == ["layer1.0.conv2", "layer2.0.conv2", "layer3.0.conv2", "layer4.0.conv2"]
    kept = {}
    for name in (blocks[0], blocks[-1]):
        rsoftmax = reference.get_submodule(name).rsoftmax
        handle = rsoftmax.register_forward_hook(lambda module, args, output: kept.update(attention=output))
        with torch.no_grad():
            expected_logits = reference(inputs)
        handle.remove()
        weights, logits = capture_split_attention(model, inputs, name)
        layer = model.get_submodule(name)
        assert weights.shape == (2, layer.radix, layer.out_channels)
        expected = kept["attention"].reshape(2, layer.radix, layer.out_channels)
        assert torch.allclose(weights, expected, atol=1e-6), name
        assert torch.allclose(weights.sum(1), torch.ones(2, layer.out_channels), atol=1e-6)
        assert torch.allclose(logits, expected_logits, rtol=1e-4, atol=1e-5)
        assert not layer._forward_hooks  # the hook is gone


def test_a_wrong_output_fails_the_reconstruction_check(model):
    layer = model.get_submodule("layer3.0.conv2")
    x = torch.randn(1, layer.conv.in_channels, 12, 12)
    with torch.no_grad():
        output = layer(x)
    assert split_attention_weights(layer, x, output).shape == (1, 2, layer.out_channels)
    wrong = output.clone()
    wrong[0, 0, 0, 0] += 0.01 * output.abs().max()
    with pytest.raises(RuntimeError, match="do not reproduce"):
        split_attention_weights(layer, x, wrong)
    layer.train()
    try:
        with pytest.raises(UsageError, match="eval mode"):
            split_attention_weights(layer, x, output)
    finally:
        layer.eval()


def test_radix_one_gives_the_sigmoid_gate():
    model = splitattn.create_model("resnest14", num_classes=4, radix=1).eval()
    weights, _ = capture_split_attention(model, torch.randn(1, 3, 64, 64))
    assert weights.shape[1] == 1 and float(weights.min()) > 0 and float(weights.max()) < 1


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated: still what users may pass
def test_blocks_that_are_not_split_attention_are_refused(model):
    with pytest.raises(UsageError, match="layer1.0.conv2"):
        capture_split_attention(model, torch.randn(1, 3, 64, 64), "layer4.0.conv1")
    with pytest.raises(UsageError, match="no module"):
        grad_cam(model, torch.randn(1, 3, 64, 64), layer="stage9")
    with pytest.raises(UsageError, match="one image"):
        grad_cam(model, torch.randn(2, 3, 64, 64))
    with pytest.raises(UsageError, match="eager"):
        grad_cam(torch.jit.script(torch.nn.Linear(2, 2)), torch.randn(1, 3, 64, 64))


def test_write_explanations_on_a_real_image(tmp_path, model):
    pytest.importorskip("captum")
    paths = sample_photos()
    from torchvision import transforms

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    transform = transforms.Compose(
        [transforms.Resize(146), transforms.CenterCrop(128), transforms.ToTensor(), transforms.Normalize(mean, std)]
    )
    with Image.open(paths[0]) as opened:
        image = opened.convert("RGB")
    names = [f"class {i}" for i in range(10)]
    files = write_explanations(tmp_path, paths[0].stem, model, image, transform, names, mean, std)
    assert set(files) == {"cam_png", "attention_png"}
    for path in files.values():
        with Image.open(path) as picture:
            assert picture.width > 600 and picture.height > 400
