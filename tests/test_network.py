"""The network: backbone API, dilation, DropBlock, norms and input errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

import splitattn
from splitattn.layers import DropBlock2d, freeze_batch_norm
from splitattn.models.resnest import ResNeStFeatures

from .conftest import randomize_state_dict, relative_error


@pytest.mark.parametrize("output_stride,reductions", [(32, [4, 8, 16, 32]), (16, [4, 8, 16, 16]), (8, [4, 8, 8, 8])])
def test_features_only_strides_and_channels(output_stride, reductions):
    backbone = splitattn.create_model("resnest14", features_only=True, output_stride=output_stride).eval()
    assert isinstance(backbone, ResNeStFeatures)
    assert backbone.channels == [256, 512, 1024, 2048] and backbone.reductions == reductions
    with torch.no_grad():
        maps = backbone(torch.randn(2, 3, 64, 96))
    assert [m.shape for m in maps] == [(2, c, 64 // r, 96 // r) for c, r in zip(backbone.channels, reductions)]


def test_features_only_subset_drops_unused_stages():
    backbone = splitattn.create_model("resnest14", features_only=True, out_indices=(0, 2))
    assert backbone.channels == [64, 512] and backbone.reductions == [2, 8]
    assert not any(key.startswith(("layer3", "layer4", "fc")) for key in backbone.state_dict())
    assert [m.shape[1] for m in backbone.eval()(torch.randn(1, 3, 64, 64))] == [64, 512]
    with pytest.raises(ValueError, match="out_indices"):
        splitattn.create_model("resnest14", features_only=True, out_indices=(5,))


def test_backbone_loads_classification_weights_and_agrees_with_classifier():
    classifier = splitattn.create_model("resnest14").eval()
    classifier.load_state_dict(randomize_state_dict(classifier.state_dict(), seed=5))
    backbone = splitattn.create_model("resnest14", features_only=True).eval()
    state = {k: v for k, v in classifier.state_dict().items() if not k.startswith("fc.")}
    backbone.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(backbone(x)[-1], classifier.forward_features(x))


def test_dilated_backbone_follows_official_semantics():
    """Official `dilated=True`: layer3/4 keep stride 1 with dilation 2/4, the first block of a
    dilated stage uses the previous dilation, avd becomes a stride-1 3x3 average pool and the
    shortcut pool an identity. Same parameters as the stride-32 model."""
    plain = splitattn.create_model("resnest50")
    dilated = splitattn.create_model("resnest50", dilated=True)
    assert [k for k in plain.state_dict()] == [k for k in dilated.state_dict()]
    first, later = dilated.layer4[0], dilated.layer4[1]
    assert first.conv2.conv.dilation == (2, 2) and later.conv2.conv.dilation == (4, 4)
    assert dilated.layer3[0].conv2.conv.dilation == (1, 1) and dilated.layer3[1].conv2.conv.dilation == (2, 2)
    assert first.avd_last.stride == 1 and isinstance(first.downsample[0], nn.Identity)
    assert dilated.layer1[0].avd_last is None  # the official code never pools in layer1
    dilated.load_state_dict(plain.state_dict())
    assert dilated.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_input_errors_are_clear():
    model = splitattn.create_model("resnest14").eval()
    with pytest.raises(ValueError, match="built for 3 input channels but got 1"):
        model(torch.randn(2, 1, 64, 64))
    with pytest.raises(ValueError, match="channels-first"):
        model(torch.randn(2, 64, 64, 3))
    with pytest.raises(ValueError, match="too small.*at least 32x32"):
        model(torch.randn(2, 3, 31, 64))
    with pytest.raises(TypeError, match=r"floating-point tensor, got torch.uint8.*x.float\(\) / 255"):
        model(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\).*unsqueeze"):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="built for 3 input channels"):
        splitattn.create_model("resnest14", features_only=True)(torch.randn(2, 4, 64, 64))


def test_batch_of_one_in_training():
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match="batch of 1 in training mode.*frozenbn.*groupnorm"):
        splitattn.create_model("resnest14").train()(x)
    with pytest.warns(splitattn.models.FrozenNormWithoutWeightsWarning):  # from scratch: tests/test_norm_layers.py
        frozen = splitattn.create_model("resnest14", norm_layer="frozenbn").train()
    for model in (frozen, splitattn.create_model("resnest14", norm_layer="groupnorm").train()):
        model(x).sum().backward()
    splitattn.create_model("resnest14").eval()(x)
    splitattn.create_model("resnest14").train()(torch.randn(2, 3, 64, 64))


def test_norm_layers_and_freezing():
    with pytest.warns(splitattn.models.FrozenNormWithoutWeightsWarning):
        frozen_norms = splitattn.create_model("resnest14", norm_layer="frozenbn")
    assert isinstance(frozen_norms.layer1[0].conv2.bn1, FrozenBatchNorm2d)
    assert isinstance(splitattn.create_model("resnest14", norm_layer="syncbn").bn1, nn.SyncBatchNorm)
    gn = splitattn.create_model("resnest50_fast_2s2x40d", norm_layer="groupnorm")
    assert gn.layer1[0].bn1.num_groups == 16  # 80 channels: gcd(32, 80) groups
    model = splitattn.create_model("resnest14").eval()
    model.load_state_dict(randomize_state_dict(model.state_dict(), seed=2))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        frozen = freeze_batch_norm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    with torch.no_grad():
        assert relative_error(frozen.train()(x), expected) < 1e-5  # frozen: train == eval


def test_drop_block_rate_and_shape():
    layer = DropBlock2d(0.2, block_size=3).train()
    x = torch.ones(64, 8, 40, 40)
    y = layer(x)
    dropped = (y == 0).float().mean().item()
    assert 0.15 < dropped < 0.25
    assert abs(y.mean().item() - 1.0) < 0.02  # rescaled to keep the expectation
    assert not torch.equal((y[:, 0] == 0), (y[:, 7] == 0))  # one mask per channel (tests/test_drop_block.py)
    mask = (y[0, 0] == 0).float()
    # Dropped units come in 3x3 blocks: every dropped unit has a fully dropped 3x3 window around it.
    windows = torch.nn.functional.avg_pool2d(mask[None, None], 3, stride=1, padding=1)[0, 0]
    full = torch.nn.functional.max_pool2d((windows > 0.999).float()[None, None], 3, stride=1, padding=1)[0, 0]
    assert torch.equal(full * mask, mask)
    assert torch.equal(layer.eval()(x), x)
    assert torch.equal(DropBlock2d(0.0).train()(x), x)
    with pytest.raises(ValueError, match="odd block_size"):
        DropBlock2d(0.1, block_size=4)


def test_drop_block_placement_and_ramp():
    model = splitattn.create_model("resnest26", drop_block_prob=0.1)
    blocks = {name.split(".")[0] for name, m in model.named_modules() if isinstance(m, DropBlock2d)}
    assert blocks == {"layer3", "layer4"}
    assert all(
        m.drop_prob.item() == pytest.approx(0.1) and m.block_size == 3
        for m in model.modules()
        if isinstance(m, DropBlock2d)
    )
    model.set_drop_block_prob(0.05)
    assert {round(m.drop_prob.item(), 6) for m in model.modules() if isinstance(m, DropBlock2d)} == {0.05}
    model.train()(torch.randn(2, 3, 64, 64)).sum().backward()
    with pytest.raises(ValueError, match="no DropBlock layers"):
        splitattn.create_model("resnest14").set_drop_block_prob(0.1)


def test_channels_last_and_classifier_reset():
    model = splitattn.create_model("resnest14").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert relative_error(out, expected) < 1e-5
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)
    model.reset_classifier(0)
    assert model(x).shape == (2, 2048)
